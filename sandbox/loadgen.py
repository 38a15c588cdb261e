"""A steady request rate through the sandbox gateway (asyncio + httpx), bounded in time.

Open loop, like real users: requests start on schedule whether or not earlier ones finished,
up to `max_in_flight`; beyond that they are shed and counted, never queued without bound.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx


@dataclass
class LoadResult:
    planned: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_body: Counter[str] = field(default_factory=Counter)
    by_revision: Counter[str] = field(default_factory=Counter)
    failed_to_connect: int = 0
    shed: int = 0
    seconds: float = 0.0

    @property
    def completed(self) -> int:
        return sum(self.by_status.values())


async def drive(
    gateway: str,
    host: str,
    rate: float,
    duration: float,
    *,
    max_in_flight: int = 500,
    timeout: float = 10.0,
    on_progress: Callable[[LoadResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """Send `rate` requests per second for `duration` seconds (with `headers`); tally what came back."""
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    result = LoadResult(planned=int(rate * duration))
    in_flight: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    sent_headers = {**(headers or {}), "Host": host}
    async with httpx.AsyncClient(base_url=gateway, headers=sent_headers, timeout=timeout, limits=limits) as client:

        async def one() -> None:
            try:
                response = await client.get("/")
            except httpx.HTTPError:
                result.failed_to_connect += 1
                return
            result.by_status[response.status_code] += 1
            result.by_body[response.text.strip()] += 1
            result.by_revision[response.headers.get("x-sandbox-revision", "")] += 1

        started = time.perf_counter()
        for index in range(result.planned):
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if should_stop is not None and should_stop():
                break
            if len(in_flight) >= max_in_flight:
                result.shed += 1
                continue
            task = asyncio.create_task(one())
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            if on_progress and index % max(1, int(rate)) == 0:
                on_progress(result)
        if in_flight:
            await asyncio.wait(in_flight)
        result.seconds = time.perf_counter() - started
    return result


async def sample(gateway: str, host: str, count: int, timeout: float = 10.0) -> list[str]:
    """`count` requests one after another, like the Knative guides' curl loop; the bodies."""
    async with httpx.AsyncClient(base_url=gateway, headers={"Host": host}, timeout=timeout) as client:
        return [(await client.get("/")).text.strip() for _ in range(count)]

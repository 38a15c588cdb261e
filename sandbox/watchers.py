"""Many dashboards following one rollout: N clients on its Server-Sent Events stream at once,
from one background thread, for tests and benchmarks of the API under open streams."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx


class EventStreams:
    """`count` clients on `GET {api}/v1/rollouts/{id}/events` (text/event-stream), each recording
    the event kinds it received, until the stream ends or `stop()`."""

    def __init__(self, api: str, rollout_id: str, token: str, count: int) -> None:
        self.url = f"{api}/v1/rollouts/{rollout_id}/events"
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        self.kinds: list[list[str]] = [[] for _ in range(count)]
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="event-streams", daemon=True)

    def start(self) -> EventStreams:
        self._thread.start()
        return self

    @property
    def connected(self) -> int:
        """Streams that received at least their first event."""
        return sum(1 for kinds in self.kinds if kinds)

    @property
    def ended(self) -> int:
        return sum(1 for kinds in self.kinds if "end" in kinds)

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.connected < len(self.kinds) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.connected == len(self.kinds)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _main(self) -> None:
        limits = httpx.Limits(max_connections=len(self.kinds) + 10)
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=60), limits=limits) as client:
            await asyncio.gather(*(self._follow(client, index) for index in range(len(self.kinds))))

    async def _follow(self, client: httpx.AsyncClient, index: int) -> None:
        try:
            async with client.stream("GET", self.url, headers=self.headers) as answer:
                async for line in answer.aiter_lines():
                    if line.startswith("event: "):
                        self.kinds[index].append(line.removeprefix("event: "))
                    if self._stop.is_set() or self.kinds[index][-1:] == ["end"]:
                        return
        except httpx.HTTPError as exc:
            self.errors.append(f"stream {index}: {type(exc).__name__}: {exc}")

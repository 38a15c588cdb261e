"""What open dashboard pages cost the API: `GET /v1/rollouts/{id}` latency with N rollout pages live.

Starts the sandbox, a private Redis, two workers, the scheduler and one API process; registers
N rollouts that stay live (their steps last an hour; with no metrics backend every 1 s tick
logs a verdict, so each page gets an event a second); then, in a separate process, does what
each open rollout page of `api/ui/static/app.js` does: follows its rollout's event stream, reads
the rollout again at most every 500 ms after an event, and every 5 s regardless. Meanwhile one
client in this process times `GET /v1/rollouts/{id}` back to back. Run with 0 pages for the
baseline.

    .venv/bin/python -m bench.dashboard_load                      # 0 and 50 pages
    .venv/bin/python -m bench.dashboard_load --pages 0,50,100 --no-write
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx

from adapters.redis_store import RolloutStore
from bench.results import write_section
from bench.stack import api_stack
from bench.streams import TOKEN, _service
from policies import load_policy
from rollouts import Rollout
from rollouts.log import LogEntry
from sandbox.cluster import Endpoints
from sandbox.processes import stop_on_sigterm

HEADERS = {"Authorization": f"Bearer {TOKEN}"}
REFRESH_AFTER_EVENT_S, REFRESH_EVERY_S = 0.5, 5.0


def _rollouts(endpoints: Endpoints, store: RolloutStore, count: int) -> list[str]:
    namespace = f"pages-{uuid.uuid4().hex[:6]}"
    ids = []
    for index in range(count):
        name = f"svc{index}"
        _service(endpoints, namespace, name)
        now = datetime.now(UTC)
        policy = load_policy("default", {"steps": [50], "step_min_duration": "1h", "interval": "1s"})
        rollout = Rollout.new(
            id=uuid.uuid4().hex[:12],
            namespace=namespace,
            service=name,
            stable_revision=f"{name}-00001",
            canary_revision=f"{name}-00002",
            policy=policy,
            now=now,
        )
        store.create(rollout, LogEntry("created", "bench", now, "pending"))
        ids.append(rollout.id)
    return ids


def _pages(url: str, ids: list[str], seconds: float, events: multiprocessing.Queue[int]) -> None:
    """N rollout pages, as app.js drives them, for `seconds`; puts the events they received."""

    async def page(client: httpx.AsyncClient, rollout_id: str) -> int:
        received, refreshed = 0, 0.0
        deadline = time.monotonic() + seconds
        headers = {**HEADERS, "Accept": "text/event-stream"}
        try:
            async with client.stream("GET", f"/v1/rollouts/{rollout_id}/events", headers=headers) as stream:
                async for line in stream.aiter_lines():
                    now = time.monotonic()
                    if now > deadline:
                        break
                    if line.startswith("event: "):
                        received += 1
                    if (line.startswith("event: ") and now - refreshed >= REFRESH_AFTER_EVENT_S) or (
                        now - refreshed >= REFRESH_EVERY_S
                    ):
                        refreshed = now
                        (await client.get(f"/v1/rollouts/{rollout_id}", headers=HEADERS)).raise_for_status()
        except httpx.HTTPError:
            pass
        return received

    async def main() -> int:
        limits = httpx.Limits(max_connections=2 * len(ids) + 10)
        timeout = httpx.Timeout(10, read=60)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
            return sum(await asyncio.gather(*(page(client, rollout_id) for rollout_id in ids)))

    events.put(asyncio.run(main()))


def _one_size(endpoints: Endpoints, store: RolloutStore, url: str, pages: int, seconds: float) -> dict[str, float]:
    ids = _rollouts(endpoints, store, max(pages, 1))
    time.sleep(3)  # every rollout past its first tick
    events: multiprocessing.Queue[int] = multiprocessing.Queue()
    emulated = multiprocessing.Process(target=_pages, args=(url, ids[:pages], seconds + 5, events), daemon=True)
    if pages:
        emulated.start()
        time.sleep(5)  # every page connected and replaying its log
    timings = []
    with httpx.Client(base_url=url, headers=HEADERS, timeout=10) as http:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            http.get(f"/v1/rollouts/{ids[0]}").raise_for_status()
            timings.append((time.perf_counter() - started) * 1000)
            time.sleep(0.01)
    received = 0
    if pages:
        emulated.join(seconds + 30)
        received = events.get(timeout=5) if not events.empty() else 0
    quantiles = statistics.quantiles(timings, n=100)
    return {"reads": len(timings), "p50": statistics.median(timings), "p99": quantiles[98], "events": received}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", default="0,50", help="comma-separated numbers of open rollout pages")
    parser.add_argument("--seconds", type=float, default=30, help="how long reads are timed per size")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    rows = []
    with api_stack("autocanary-pages-", f"bench:operator:{TOKEN}") as stack:
        for count in (int(n) for n in args.pages.split(",")):
            figures = _one_size(stack.endpoints, stack.store, stack.url, count, args.seconds)
            row = (
                f"| {count} | {figures['reads']:.0f} | {figures['p50']:.1f} | {figures['p99']:.1f}"
                f" | {figures['events']:.0f} |"
            )
            print(row, flush=True)
            rows.append(row)
    table = (
        "| rollout pages open | timed reads | GET /v1/rollouts/{id} p50 ms | p99 ms | events the pages received |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows)
    )
    print(table)
    if not args.no_write:
        note = (
            f"`python -m bench.dashboard_load`: one API process (uvicorn); each page, emulated as app.js behaves,"
            " follows its own live rollout's event stream (a verdict a second) and reads the rollout after"
            " events (at most every 500 ms) and every 5 s; one client times back-to-back reads of one rollout"
            f" for {args.seconds:g} s. Pages, API, workers, scheduler, Redis and the sandbox share this 2-core"
            " machine."
        )
        write_section(
            Path(__file__).with_name("RESULTS.md"), "dashboard", "The dashboard's cost on the API", note, table
        )


if __name__ == "__main__":
    main()

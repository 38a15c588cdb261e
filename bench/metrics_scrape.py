"""How long the API's `/metrics` takes as rollouts accumulate in Redis.

A scrape reads what the store keeps for it as rollouts change (phase counts, check totals, and
five gauges per active rollout), never the rollout documents: ended rollouts cost nothing, each
active one its five series. This stores N rollouts, all active (the worst case), in a private
Redis and times the API's exposition function, the whole work of a `GET /metrics` but for HTTP.

    .venv/bin/python -m bench.metrics_scrape                  # N = 100, 1000, 2000, 5000
    .venv/bin/python -m bench.metrics_scrape --sizes 100 --no-write
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from adapters.redis_store import RolloutStore
from api.exposition import exposition
from bench.results import write_section
from policies import load_policy
from rollouts import Rollout
from rollouts.log import LogEntry
from sandbox.processes import RedisProcess, stop_on_sigterm


def _store_rollouts(store: RolloutStore, total: int) -> None:
    policy = load_policy("default")
    now = datetime.now(UTC)
    have = len(store.list_rollouts(limit=1_000_000).rollouts)
    for i in range(have, total):
        rollout = Rollout.new(
            id=uuid.uuid4().hex[:12],
            namespace=f"ns{i % 50}",
            service=f"svc{i}",
            stable_revision=f"svc{i}-00001",
            canary_revision=f"svc{i}-00002",
            policy=policy,
            now=now,
        )
        store.create(rollout, LogEntry("created", "bench", now, "pending"))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,2000,5000", help="comma-separated numbers of stored rollouts")
    parser.add_argument("--scrapes", type=int, default=10, help="timed scrapes per size")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    rows = []
    with tempfile.TemporaryDirectory(prefix="autocanary-metrics-") as folder:
        redis = RedisProcess(Path(folder), durable=False)
        redis.start()
        try:
            store = RolloutStore.from_url(redis.url)
            for size in (int(size) for size in args.sizes.split(",")):
                _store_rollouts(store, size)
                exposition(store)  # warm
                times, length = [], 0
                for _ in range(args.scrapes):
                    started = time.perf_counter()
                    length = len(exposition(store).encode())
                    times.append(time.perf_counter() - started)
                median, worst = 1000 * statistics.median(times), 1000 * max(times)
                print(f"N={size}: median {median:.0f} ms, max {worst:.0f} ms, {length:,} bytes")
                rows.append(f"| {size:,} | {median:.0f} | {worst:.0f} | {length:,} |")
        finally:
            redis.stop()
    table = "| stored rollouts | /metrics median ms | max ms | bytes |\n|---|---|---|---|\n" + "\n".join(rows)
    print(table)
    if not args.no_write:
        note = (
            f"`python -m bench.metrics_scrape --sizes {args.sizes} --scrapes {args.scrapes}`: the API's exposition"
            " function (a `GET /metrics` but for HTTP), a private Redis, every rollout active (each adds"
            " canary-weight and evidence series)."
        )
        write_section(
            Path(__file__).with_name("RESULTS.md"), "metrics_scrape", "Cost of a /metrics scrape", note, table
        )


if __name__ == "__main__":
    main()

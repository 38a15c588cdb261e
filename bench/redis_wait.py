"""What waiting for replicas costs, and how long a Redis failover leaves the store unable to write.

A primary, two replicas and three Sentinels (real processes, AOF `everysec` as deploy/ runs them,
or `always` with --fsync-always), reached through the Sentinels as every autocanary process does.
Times the store's writes that wait for replicas (`AUTOCANARY_REDIS_WAIT_REPLICAS`) with 0, 1 and
2 replicas to wait for: a registration, a command (what the API does before its 202), a batch's
leases and a batch's save (what every tick does twice). Then SIGKILLs the primary and measures
how long until a write that waits for one replica succeeds again through the same store.

    .venv/bin/python -m bench.redis_wait
    .venv/bin/python -m bench.redis_wait --rounds 200 --batch 500 --no-write
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from adapters.redis_store import RolloutStore
from adapters.redis_store.connection import RedisLocation
from bench.results import write_section
from policies import load_policy
from rollouts import ManualActionKind, Rollout
from rollouts.errors import TransientError
from rollouts.log import LogEntry
from rollouts.records import SaveItem
from sandbox.processes import SentinelGroup, stop_on_sigterm


def _rollout(number: int) -> tuple[Rollout, LogEntry]:
    now = datetime.now(UTC)
    rollout = Rollout.new(
        id=uuid.uuid4().hex[:12],
        namespace=f"ns{number % 50}",
        service=f"svc{number}-{uuid.uuid4().hex[:6]}",
        stable_revision="a-00001",
        canary_revision="a-00002",
        policy=load_policy("default"),
        now=now,
    )
    return rollout, LogEntry("created", "bench", now, "pending")


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return 1000 * statistics.median(ordered), 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _timed(rounds: int, operation: Callable[[int], None]) -> tuple[float, float]:
    samples = []
    for number in range(rounds):
        started = time.perf_counter()
        operation(number)
        samples.append(time.perf_counter() - started)
    return _percentiles(samples)


def _measure(store: RolloutStore, rounds: int, batch: int) -> dict[str, tuple[float, float]]:
    batch_of = [_rollout(n) for n in range(batch)]
    for rollout, created in batch_of:
        store.create(rollout, created)
    ids = [rollout.id for rollout, _ in batch_of]
    stored = {r.id: r for r in store.get_many(ids) if r is not None}
    owner = f"bench-{uuid.uuid4().hex[:6]}"

    def register(number: int) -> None:
        store.create(*_rollout(number))

    def command(number: int) -> None:
        store.commands.submit(ids[number % len(ids)], ManualActionKind.PAUSE, "bench", "", time.time())

    def leases(_: int) -> None:
        store.acquire_leases(ids, owner, 30_000)
        store.release_leases(ids, owner)

    def save(_: int) -> None:
        results = store.save_many([SaveItem(stored[i], None, None, (), (), "") for i in ids])
        for _result, saved in results:
            stored[saved.id] = saved

    return {
        "register": _timed(rounds, register),
        "command": _timed(rounds, command),
        f"leases ({batch})": _timed(rounds, leases),
        f"save ({batch})": _timed(rounds, save),
    }


def _failover(group: SentinelGroup, location: RedisLocation) -> tuple[float, float]:
    """Seconds from SIGKILL of the primary to (Sentinels naming a new one, a durable write again)."""
    store = RolloutStore.at(location, prefix=f"fo-{uuid.uuid4().hex[:6]}")
    store.create(*_rollout(0))
    old = group.primary.port
    killed = time.monotonic()
    group.primary.kill()
    promoted = None
    while True:
        if promoted is None and group.current_primary() not in (None, old):
            promoted = time.monotonic() - killed
        try:
            store.create(*_rollout(1))
            return promoted or time.monotonic() - killed, time.monotonic() - killed
        except TransientError:
            time.sleep(0.05)
        if time.monotonic() - killed > 60:
            raise RuntimeError("no durable write within 60 s of the failover")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300, help="timed operations of each kind")
    parser.add_argument("--batch", type=int, default=500, help="rollouts in a tick's batch (AUTOCANARY_BATCH_SIZE)")
    parser.add_argument("--fsync-always", action="store_true", help="AOF fsync on every write instead of every second")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    rows, measured = [], {}
    with tempfile.TemporaryDirectory(prefix="autocanary-wait-") as folder:
        group = SentinelGroup(Path(folder), replicas=2, fsync="always" if args.fsync_always else "everysec")
        try:
            group.start()
            for wait in (0, 1, 2):
                location = RedisLocation.parse(
                    "redis://sentinel/0", group.addresses, group.master_name, wait_replicas=wait
                )
                measured[wait] = _measure(RolloutStore.at(location, prefix=f"w{wait}"), args.rounds, args.batch)
                print(
                    f"wait for {wait}: "
                    + ", ".join(f"{k} {p50:.2f}/{p99:.2f} ms" for k, (p50, p99) in measured[wait].items())
                )
            location = RedisLocation.parse("redis://sentinel/0", group.addresses, group.master_name, wait_replicas=1)
            promoted, writable = _failover(group, location)
            print(f"failover: promoted after {promoted:.1f} s, durable writes again after {writable:.1f} s")
        finally:
            group.stop()
    for operation in measured[0]:
        cells = " | ".join(f"{measured[w][operation][0]:.2f} / {measured[w][operation][1]:.2f}" for w in (0, 1, 2))
        rows.append(f"| {operation} | {cells} |")
    table = (
        "| write (p50 / p99 ms) | no wait | wait for 1 replica | wait for 2 replicas |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nFailover (down-after 1 s, as the test runs it): the Sentinels named a new primary {promoted:.1f} s"
        f" after the SIGKILL; a write waiting for one replica went through again {writable:.1f} s after it."
    )
    print(table)
    if not args.no_write:
        note = (
            f"`python -m bench.redis_wait --rounds {args.rounds} --batch {args.batch}"
            f"{' --fsync-always' if args.fsync_always else ''}`: a primary, two replicas and three Sentinels"
            f" on this machine (AOF fsync {'always' if args.fsync_always else 'everysec'}), reached through"
            " the Sentinels; each write timed from the store's call to its return, WAIT included."
        )
        write_section(Path(__file__).with_name("RESULTS.md"), "redis_wait", "Waiting for Redis replicas", note, table)


if __name__ == "__main__":
    main()

"""The API under the people and dashboards who watch rollouts: pollers, event streams, list pages
and `/metrics` scrapes against one real API process, at sizes up to 10,000 stored rollouts.

A private Redis holds N rollouts (a tenth active, the rest ended) and one `autocanary api`
process (uvicorn, `--workers` as given) serves them; nothing else runs, so the API is what is
measured. The clients are one asyncio process speaking HTTP/1.1 on raw keep-alive sockets (a
few microseconds a request, so the API, not the client, is what limits the figures):

- pollers: C clients each reading `GET /v1/rollouts/{id}` every 0.1 s, then back to back, one of
  50 active rollouts each, for D seconds after a 2 s warm-up: answers a second, latency p50 and p99;
- list pages: `GET /v1/rollouts?limit=50` unfiltered, by namespace and by phase, in turn;
- `/metrics`: sequential scrapes;
- at the largest size, S event streams open on the active rollouts: the API's CPU at rest,
  how long an event takes to reach every stream (one event on each followed rollout at once),
  and the pollers again while the streams stay open.

    .venv/bin/python -m bench.api_load                                   # 1,000 and 10,000 stored
    .venv/bin/python -m bench.api_load --sizes 1000 --streams 200 --no-write
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import tempfile
import time
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvloop

from adapters.redis_store import RolloutStore
from bench.results import write_section
from bench.stack import wait_until
from policies import load_policy
from rollouts import Phase, Rollout
from rollouts.log import LogEntry
from sandbox.processes import Processes, RedisProcess, stop_on_sigterm
from sandbox.prometheus import free_port

T = TypeVar("T")
TOKEN = "bench-secret"  # noqa: S105 (a bench's own token)
ACTIVE_SHOWN = 50
"""Active rollouts the pollers and streams spread over."""
WARM_UP_SECONDS = 2.0
"""Polling before each size's measured runs, not counted."""
_LENGTH = re.compile(rb"content-length: *(\d+)", re.IGNORECASE)
_MARK = re.compile(rb"bench-event t=(\d+\.\d+)")


@dataclass
class Timings:
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0
    client_cpu: float = 0.0
    """The clients' own CPU, in cores: near 1, they (not the API) limit the rate."""

    def summary(self) -> tuple[float, float, float, float]:
        """(answers a second, p50 ms, p99 ms, the clients' CPU in cores)."""
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0, 0.0, 0.0, self.client_cpu
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        return len(ordered) / self.seconds, 1000 * statistics.median(ordered), 1000 * p99, self.client_cpu


def _request(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {TOKEN}\r\n{extra}\r\n".encode()


async def _answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    found = _LENGTH.search(head)
    await reader.readexactly(int(found.group(1)) if found else 0)
    return int(head[9:12])


async def _client(port: int, paths: list[str], until: float, timings: Timings, every: float = 0.0) -> None:
    """Reads `paths` in turn until `until`: back to back, or one every `every` seconds (a dashboard's
    poll interval; a late answer delays the next read, as a browser's fetch loop does)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    requests = [_request(path) for path in paths]
    number = 0
    next_at = time.monotonic() + random.uniform(0, every)  # pollers do not start in step
    try:
        while time.monotonic() < until:
            if every:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at = max(next_at + every, time.monotonic())
            started = time.perf_counter()
            writer.write(requests[number % len(requests)])
            status = await _answer(reader)
            if status == 200:
                timings.latencies.append(time.perf_counter() - started)
            else:
                timings.errors += 1
            number += 1
    finally:
        writer.close()


async def _load(port: int, clients: int, paths: list[str], seconds: float, every: float = 0.0) -> Timings:
    timings = Timings()
    until = time.monotonic() + seconds
    started, cpu = time.monotonic(), time.process_time()
    await asyncio.gather(*(_client(port, paths[i::clients] or paths, until, timings, every) for i in range(clients)))
    timings.seconds = time.monotonic() - started
    timings.client_cpu = (time.process_time() - cpu) / timings.seconds
    return timings


class Streams:
    """S event streams on raw sockets; each notes when marked events arrive."""

    def __init__(self, port: int, rollout_ids: list[str], count: int) -> None:
        self.port = port
        self.paths = [f"/v1/rollouts/{rollout_ids[i % len(rollout_ids)]}/events" for i in range(count)]
        self.arrivals: list[dict[float, float]] = [{} for _ in range(count)]
        self.open = 0
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.tasks = [asyncio.create_task(self._follow(i)) for i in range(len(self.paths))]
        deadline = time.monotonic() + 60
        while self.open < len(self.paths) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def _follow(self, number: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        writer.write(_request(self.paths[number], "Accept: text/event-stream\r\nLast-Event-ID: 0-0\r\n"))
        await reader.readuntil(b"\r\n\r\n")
        self.open += 1
        seen = self.arrivals[number]
        tail = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                now = time.time()
                text = tail + chunk
                for sent in _MARK.findall(text):
                    seen.setdefault(float(sent), now)
                tail = text[-64:]
        finally:
            writer.close()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _cpu_seconds(pid: int) -> float:
    """CPU time of the API process and its children (uvicorn's worker processes with --workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _fill(store: RolloutStore, total: int, active: list[str]) -> None:
    """Up to `total` stored: a tenth active (progressing, each with 50 log entries), the rest ended."""
    policy = load_policy("default")
    have = store.redis.zcard(store._key("index"))
    now = datetime.now(UTC)
    pipe_every = 200
    for number in range(have, total):
        created = now - timedelta(seconds=total - number)
        rollout = Rollout.new(
            id=uuid.uuid4().hex[:12],
            namespace=f"ns{number % 50}",
            service=f"svc{number}",
            stable_revision=f"svc{number}-00001",
            canary_revision=f"svc{number}-00002",
            policy=policy,
            now=created,
        )
        if number % 10 == 0:
            rollout = rollout.model_copy(update={"phase": Phase.PROGRESSING, "step_started_at": created})
        else:
            rollout = rollout.model_copy(update={"phase": Phase.SUCCEEDED, "finished_at": created})
        store.create(rollout, LogEntry("created", "bench", created, rollout.phase.value))
        if rollout.phase is Phase.PROGRESSING and len(active) < ACTIVE_SHOWN:
            active.append(rollout.id)
            entries = [
                LogEntry(
                    "verdict", "errors: canary 0.4 % vs stable 0.5 %", created, "progressing", data={"evidence": 1.0}
                )
                for _ in range(49)
            ]
            store.append_events(rollout.id, entries)
        if number % pipe_every == 0:
            print(f"  stored {number:,}/{total:,}", end="\r", flush=True)
    print(f"  stored {total:,}        ")


async def _measure_size(
    port: int, active: list[str], clients: int, seconds: float, every: float
) -> dict[str, tuple[float, ...]]:
    figures: dict[str, tuple[float, ...]] = {}
    polled = [f"/v1/rollouts/{i}" for i in active]
    # Not measured: the pollers' first seconds, while the API builds each rollout's answer once
    # (a few ms each, all at once) and 200 connections open.
    await _load(port, clients, polled, WARM_UP_SECONDS, every)
    figures["poll"] = (await _load(port, clients, polled, seconds, every)).summary()
    figures["poll_flat_out"] = (await _load(port, clients, polled, seconds)).summary()
    figures["list"] = (await _load(port, 1, ["/v1/rollouts?limit=50"], seconds / 2)).summary()
    figures["list_ns"] = (await _load(port, 1, ["/v1/rollouts?limit=50&namespace=ns7"], seconds / 2)).summary()
    figures["list_phase"] = (await _load(port, 1, ["/v1/rollouts?limit=50&phase=progressing"], seconds / 2)).summary()
    figures["metrics"] = (await _load(port, 1, ["/metrics"], seconds / 2)).summary()
    return figures


async def _measure_streams(
    store: RolloutStore, port: int, pid: int, active: list[str], count: int, clients: int, seconds: float, every: float
) -> dict[str, float]:
    streams = Streams(port, active, count)
    await streams.start()
    figures: dict[str, float] = {"open": streams.open}
    await asyncio.sleep(2)
    cpu_before, wall_before = _cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(10)
    figures["cpu_at_rest"] = (_cpu_seconds(pid) - cpu_before) / (time.monotonic() - wall_before)
    delays: list[float] = []
    for _round in range(5):
        sent = time.time()
        mark = f"bench-event t={sent:.6f}"
        for rollout_id in active:  # one event on every followed rollout: every stream gets one
            store.append_events(rollout_id, [LogEntry("bench", mark, datetime.now(UTC), "progressing")])
        await asyncio.sleep(3)
        for seen in streams.arrivals:
            arrived = seen.get(float(f"{sent:.6f}"))
            delays.append(arrived - sent if arrived is not None else float("inf"))
    figures["event_p50"], figures["event_max"] = statistics.median(delays), max(delays)
    figures["missed"] = sum(1 for delay in delays if delay == float("inf"))
    polled = await _load(port, clients, [f"/v1/rollouts/{i}" for i in active], seconds, every)
    figures["poll_rate"], figures["poll_p50"], figures["poll_p99"], _ = polled.summary()
    await streams.stop()
    return figures


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """On uvloop (installed with uvicorn[standard]): the clients cost the machine less CPU."""
    return uvloop.run(coroutine)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated numbers of stored rollouts")
    parser.add_argument("--pollers", type=int, default=200, help="concurrent pollers")
    parser.add_argument("--streams", type=int, default=1000, help="event streams at the largest size (0: none)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each polling run")
    parser.add_argument(
        "--every", type=float, default=0.1, help="each poller's interval, s (200 x 0.1 s: 2,000 reads offered a second)"
    )
    parser.add_argument("--workers", type=int, default=1, help="API processes (`autocanary api --workers`)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    sizes = [int(size) for size in args.sizes.split(",")]
    rows, stream_figures = [], None
    with tempfile.TemporaryDirectory(prefix="autocanary-api-load-") as folder:
        base = Path(folder)
        (base / "redis").mkdir()
        redis = RedisProcess(base / "redis", durable=False)
        kubeconfig = base / "kubeconfig"  # the API reads no cluster here; registration is not measured
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: none\nclusters: [{name: none, cluster: {server: "
            "'http://127.0.0.1:9'}}]\ncontexts: [{name: none, context: {cluster: none, user: none}}]\n"
            "users: [{name: none, user: {}}]\n"
        )
        processes: Processes | None = None
        try:
            redis.start()
            store = RolloutStore.from_url(redis.url)
            port = free_port()
            env = {
                "AUTOCANARY_REDIS_URL": redis.url,
                "AUTOCANARY_KUBECONFIG": str(kubeconfig),
                "AUTOCANARY_PROMETHEUS_URL": "http://127.0.0.1:9",
                "AUTOCANARY_TOKENS": f"bench:viewer:{TOKEN}",
                "AUTOCANARY_LOG_LEVEL": "error",
            }
            processes = Processes(env, base)
            processes.start("api", ["api", "--port", str(port), "--workers", str(args.workers)])
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, 30, "the API")
            active: list[str] = []
            for size in sizes:
                _fill(store, size, active)
                figures = _run(_measure_size(port, active, args.pollers, args.seconds, args.every))
                print(
                    f"N={size:,}: "
                    + ", ".join(f"{k} {v[0]:.0f}/s p50 {v[1]:.1f} p99 {v[2]:.1f} ms" for k, v in figures.items())
                )
                rows.append((size, figures))
            if args.streams:
                pid = processes.running["api"].pid
                stream_figures = asyncio.run(
                    _measure_streams(store, port, pid, active, args.streams, args.pollers, args.seconds, args.every)
                )
                print(f"streams: {stream_figures}")
        finally:
            if processes:
                processes.stop_all()
            redis.stop()
    table = _table(rows, stream_figures, args)
    print(table)
    if not args.no_write:
        note = (
            f"`python -m bench.api_load --sizes {args.sizes} --pollers {args.pollers} --streams {args.streams}"
            f" --workers {args.workers}`: {args.workers} API process(es) (uvicorn), a private Redis, the clients in"
            " one asyncio process on raw keep-alive sockets, all on this 2-core machine; a tenth of the stored"
            f" rollouts active; pollers read {ACTIVE_SHOWN} of them (each with 50 log entries), every {args.every:g} s"
            f" each, then back to back, after {WARM_UP_SECONDS:g} s of polling not counted (each answer built once,"
            " the connections opened); list pages and /metrics are read by one client back to back."
        )
        write_section(Path(__file__).with_name("RESULTS.md"), "api_load", "The API under watchers", note, table)


def _table(
    rows: list[tuple[int, dict[str, tuple[float, ...]]]], streams: dict[str, float] | None, args: argparse.Namespace
) -> str:
    lines = [
        f"| stored | {args.pollers} pollers every {args.every:g} s: answers/s | p50 / p99 ms"
        " | back to back: answers/s (clients' CPU, cores) | p50 / p99 ms"
        " | list p99 ms (all / namespace / phase) | /metrics p50 / p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for size, f in rows:
        flat = f["poll_flat_out"]
        lines.append(
            f"| {size:,} | {f['poll'][0]:,.0f} | {f['poll'][1]:.1f} / {f['poll'][2]:.1f}"
            f" | {flat[0]:,.0f} ({flat[3]:.2f}) | {flat[1]:.1f} / {flat[2]:.1f}"
            f" | {f['list'][2]:.1f} / {f['list_ns'][2]:.1f} / {f['list_phase'][2]:.1f}"
            f" | {f['metrics'][1]:.1f} / {f['metrics'][2]:.1f} |"
        )
    if streams:
        lines += [
            "",
            f"With {streams['open']:,.0f} event streams open at {rows[-1][0]:,} stored: the API's CPU at rest"
            f" {100 * streams['cpu_at_rest']:.1f} % of a core; an event reached its streams in"
            f" {1000 * streams['event_p50']:.0f} ms median, {1000 * streams['event_max']:.0f} ms at most"
            f" ({streams['missed']:.0f} missed); {args.pollers} pollers every {args.every:g} s meanwhile:"
            f" {streams['poll_rate']:,.0f}"
            f" answers/s, p50 {streams['poll_p50']:.1f} ms, p99 {streams['poll_p99']:.1f} ms.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

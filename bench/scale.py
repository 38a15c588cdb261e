"""Scale benchmark: many concurrent rollouts on the sandbox, two worker processes, 10 s ticks.

For each N it creates N Knative Services (spread over namespaces, each with a stable and a
canary revision), or with `--istio-share` that share of Istio canaries instead (two Deployments,
a DestinationRule and a VirtualService each), registers N rollouts whose steps last an hour (so
they all stay in flight), waits until every one is progressing, and then measures for `--measure` seconds:

- rollout ticks per second and tick lateness (when a tick started minus when it was due), p50/p99;
- worker CPU per rollout tick (user + system time of the two worker processes);
- Prometheus queries per tick round (from Prometheus's own request counter);
- Redis memory per rollout;
- abort latency: from enqueueing the abort to `spec.traffic` back at stable 100 % in the sandbox's
  API server, p50/p99 over `--aborts` aborts sent one after another while the ticks run.

and, for the start-up burst (all N registered at once by 16 clients): how long registering took,
how long until every rollout was at step 1 (its canary weight written and observed), and the
tick lateness p99 meanwhile; and the CPU of each part (workers with their control consumers and
relays, the sandbox, Redis, the scheduler) during the burst and while measuring, to say what
limited each figure on this machine. `--workers 4` runs four worker processes; `--keep DIR`
keeps the processes' logs (a tick batch over 5 s is logged with the time of each stage).

The sandbox serves no traffic here (the canaries' verdicts are inconclusive), which makes this a
measure of the scheduling, Redis, Kubernetes and Prometheus round trips, not of the statistics
(bench/decisions.py measures those).

    .venv/bin/python -m bench.scale                       # N = 100 and 1000
    .venv/bin/python -m bench.scale --sizes 100 --measure 30 --aborts 20
    .venv/bin/python -m bench.scale --sizes 1000 --istio-share 0.5     # half of them Istio canaries
    .venv/bin/python -m bench.scale --sizes 1000,5000,10000 --measure 60 --aborts 100
    .venv/bin/python -m bench.scale --sizes 10000 --workers 4 --no-write
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
from celery import Celery
from kubernetes import client, config

from adapters.redis_store import RolloutStore
from bench.results import write_section
from policies import load_policy
from rollouts import ManualActionKind, Phase, Rollout
from rollouts.log import LogEntry
from sandbox.cluster import Endpoints
from sandbox.processes import Processes, RedisProcess, SandboxProcess, stop_on_sigterm

GROUP, VERSION = "serving.knative.dev", "v1"
ISTIO = "networking.istio.io"
REGISTERING_CLIENTS = 16
"""Registrations sent at once (straight to the store, as the API stores them)."""
POLICY: dict[str, Any] = {
    "steps": [5, 10, 25, 50],
    "step_min_duration": "1h",
    "interval": "10s",
    "min_requests_per_step": 0,
    "on_insufficient_traffic": "hold",
    "progress_deadline": "10m",
}


def _service(name: str, target: str, pin: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "template": {"spec": {"containers": [{"image": "hello", "env": [{"name": "TARGET", "value": target}]}]}}
        },
    }
    if pin:
        body["spec"]["traffic"] = [{"revisionName": pin, "percent": 100}]
    return body


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _prometheus_queries(url: str) -> float:
    """Queries Prometheus has answered, from its own /metrics (it does not scrape itself here)."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith("prometheus_http_requests_total{") and (
            'handler="/api/v1/query"' in line or 'handler="/api/v1/query_range"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _descendants(pid: int) -> list[int]:
    """`pid` and every process below it (a worker forks its control consumer and its relay)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, []))
    return found


def _tree_cpu(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in {p for root in pids for p in _descendants(root)}:
        try:
            total += _cpu_seconds(pid)
        except (OSError, IndexError):
            continue  # ended meanwhile
    return total


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _abort(store: RolloutStore, celery: Celery, rollout_id: str, sent: float) -> None:
    """As the API does: the command stored first, the Celery message a wake-up."""
    command_id = store.commands.submit(rollout_id, ManualActionKind.ABORT, "bench", "scale benchmark", sent)
    celery.send_task("autocanary.control", args=[command_id], queue="control")


def _is_istio(index: int, share: float) -> bool:
    """Every 1/share-th rollout is an Istio one (share 0.5: every other), spread evenly."""
    return int((index + 1) * share) > int(index * share)


def _istio_objects(namespace: str, name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Two Deployments of `name` (versions v1, v2); its DestinationRule and VirtualService at v1 100 %."""
    deployments = []
    for version in ("v1", "v2"):
        labels = {"app": name, "version": version}
        deployments.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"{name}-{version}"},
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": name}]}},
                },
            }
        )
    subsets = [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")]
    route = {
        "name": "primary",
        "route": [
            {"destination": {"host": name, "subset": "v1"}, "weight": 100},
            {"destination": {"host": name, "subset": "v2"}, "weight": 0},
        ],
    }
    istio = [
        {"kind": "DestinationRule", "metadata": {"name": name}, "spec": {"host": name, "subsets": subsets}},
        {"kind": "VirtualService", "metadata": {"name": name}, "spec": {"hosts": [name], "http": [route]}},
    ]
    return deployments, [{"apiVersion": f"{ISTIO}/v1", **item} for item in istio]


def _create_targets(endpoints: Endpoints, names: list[tuple[str, str, bool]]) -> None:
    api_client = config.new_client_from_config(config_file=endpoints.kubeconfig)  # type: ignore[no-untyped-call]
    api, apps = client.CustomObjectsApi(api_client), client.AppsV1Api(api_client)
    for namespace, name, istio in names:
        if istio:
            deployments, objects = _istio_objects(namespace, name)
            for deployment in deployments:
                apps.create_namespaced_deployment(namespace, cast(Any, deployment))  # a dict, sent as it is
            for obj, plural in zip(objects, ("destinationrules", "virtualservices"), strict=True):
                api.create_namespaced_custom_object(ISTIO, "v1", namespace, plural, obj)
        else:
            api.create_namespaced_custom_object(GROUP, VERSION, namespace, "services", _service(name, "v1"))
    time.sleep(1.5)  # revisions 00001 become Ready
    for namespace, name, istio in names:
        if not istio:
            api.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "services", name, _service(name, "v2", pin=f"{name}-00001")
            )
    time.sleep(1.5)


def _new_rollout(namespace: str, name: str, istio: bool, now: datetime) -> Rollout:
    if istio:
        return Rollout.new(
            id=uuid.uuid4().hex[:12],
            namespace=namespace,
            service=name,
            stable_revision="v1",
            canary_revision="v2",
            policy=load_policy("default", {**POLICY, "dialect": "istio"}),
            now=now,
            target_kind="istio",
            route="primary",
            host=name,
        )
    return Rollout.new(
        id=uuid.uuid4().hex[:12],
        namespace=namespace,
        service=name,
        stable_revision=f"{name}-00001",
        canary_revision=f"{name}-00002",
        policy=load_policy("default", POLICY),
        now=now,
    )


def _canary_weight(api: client.CustomObjectsApi, namespace: str, name: str, istio: bool) -> int:
    if istio:
        found: Any = api.get_namespaced_custom_object(ISTIO, "v1", namespace, "virtualservices", name)
        route = found["spec"]["http"][0]["route"]
        return sum(int(d.get("weight", 0)) for d in route if d["destination"].get("subset") == "v2")
    service: Any = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "services", name)
    return sum(t.get("percent", 0) for t in service["spec"]["traffic"] if t.get("revisionName") == f"{name}-00002")


def _register_all(size: int, names: list[tuple[str, str, bool]], store: RolloutStore) -> tuple[list[str], float, float]:
    """Register every rollout at once; their ids, seconds the registering took, and seconds from
    its start until every one was at step 1 (its canary weight written and observed)."""
    now = datetime.now(UTC)
    rollouts = [_new_rollout(namespace, name, istio, now) for namespace, name, istio in names]
    registering = time.monotonic()
    with ThreadPoolExecutor(REGISTERING_CLIENTS) as pool:  # many pipelines registering at once
        list(pool.map(lambda r: store.create(r, LogEntry("created", "bench", now, "pending", actor="bench")), rollouts))
    ids = [rollout.id for rollout in rollouts]
    registered_in = time.monotonic() - registering
    print(
        f"N={size}: {size} rollouts registered in {registered_in:.1f}s; waiting until all are progressing", flush=True
    )

    def progressing() -> int:  # the phase index's size: no document read, whatever N
        return store.metric_values()[0][Phase.PROGRESSING.value]

    deadline, last_report = registering + max(300.0, size * 0.1), 0.0
    while (count := progressing()) < size:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {count} of {size} rollouts progressing after {deadline - registering:.0f}s")
        if time.monotonic() - last_report > 10:
            print(f"N={size}: {count:,} of {size:,} at step 1", flush=True)
            last_report = time.monotonic()
        time.sleep(1.0)  # each look decodes every active rollout's gauges: not too often
    all_at_step_one = time.monotonic() - registering
    print(f"N={size}: all at step 1 {all_at_step_one:.1f}s after registration began", flush=True)
    return ids, registered_in, all_at_step_one


def _abort_latencies(
    store: RolloutStore,
    celery: Celery,
    api: client.CustomObjectsApi,
    ids: list[str],
    names: list[tuple[str, str, bool]],
    count: int,
) -> list[float]:
    """Abort `count` rollouts one after another; seconds from each abort to stable 100 % in the cluster."""
    latencies = []
    for rollout_id, (namespace, name, istio) in list(zip(ids, names, strict=True))[:count]:
        sent = time.time()
        _abort(store, celery, rollout_id, sent)
        while True:
            if _canary_weight(api, namespace, name, istio) == 0:
                latencies.append(time.time() - sent)
                break
            if time.time() - sent > 30:
                raise TimeoutError(f"abort of {rollout_id} not applied after 30s")
            time.sleep(0.005)
    return latencies


def run_size(
    size: int,
    endpoints: Endpoints,
    store: RolloutStore,
    celery: Celery,
    processes: Processes,
    sandbox: SandboxProcess,
    redis: RedisProcess,
    args: argparse.Namespace,
) -> dict[str, float]:
    api = client.CustomObjectsApi(config.new_client_from_config(config_file=endpoints.kubeconfig))  # type: ignore[no-untyped-call]
    run = uuid.uuid4().hex[:4]
    names = [
        (f"scale-{run}-{i % args.namespaces:02d}", f"svc{i:05d}", _is_istio(i, args.istio_share)) for i in range(size)
    ]
    istio_count = sum(1 for *_, istio in names if istio)
    print(
        f"N={size}: creating {size - istio_count} Knative services and {istio_count} Istio canaries"
        f" in {min(size, args.namespaces)} namespaces",
        flush=True,
    )
    _create_targets(endpoints, names)
    baseline_memory = store.memory_used()
    workers = [process.pid for name, process in processes.running.items() if name.startswith("worker-")]
    others = {
        "sandbox": [sandbox.process.pid] if sandbox.process else [],
        "redis": [redis.process.pid] if redis.process else [],
        "scheduler": [processes.running["scheduler"].pid],
        "workers, all processes": workers,
    }
    burst_before = {name: _tree_cpu(pids) for name, pids in others.items()}
    ids, registered_in, all_at_step_one = _register_all(size, names, store)
    burst_cores = {name: (_tree_cpu(pids) - burst_before[name]) / all_at_step_one for name, pids in others.items()}
    print(f"N={size}: cores used in the burst: " + ", ".join(f"{k} {v:.2f}" for k, v in burst_cores.items()))
    burst = store.samples("lateness")  # the start-up burst: every rollout registered at once
    burst_p99 = _percentile(burst, 99)
    if args.warmup:
        print(f"N={size}: all progressing; warming up for {args.warmup:g}s", flush=True)
        time.sleep(args.warmup)
    others_before = {name: _tree_cpu(pids) for name, pids in others.items()}
    cpu_before = sum(_cpu_seconds(pid) for pid in workers)
    queries_before = _prometheus_queries(endpoints.prometheus or "")
    mark = store.samples_mark("lateness")
    print(f"N={size}: measuring for {args.measure:g}s", flush=True)
    recent: list[float] = []
    ends = time.monotonic() + args.measure
    while (left := ends - time.monotonic()) > 0:  # read as it goes: Redis keeps the latest 20,000 only
        time.sleep(min(2.0, left))
        mark, taken = store.samples_since("lateness", mark)
        recent.extend(taken)
    cpu = sum(_cpu_seconds(pid) for pid in workers) - cpu_before
    cores = {name: (_tree_cpu(pids) - others_before[name]) / args.measure for name, pids in others.items()}
    print(f"N={size}: cores used while measuring: " + ", ".join(f"{k} {v:.2f}" for k, v in cores.items()), flush=True)
    queries = _prometheus_queries(endpoints.prometheus or "") - queries_before
    memory = (store.memory_used() - baseline_memory) / size
    rollout_ticks = len(recent)

    print(f"N={size}: {args.aborts} aborts while the ticks run", flush=True)
    abort_latencies = _abort_latencies(store, celery, api, ids, names, args.aborts)
    store.redis.flushdb()  # the next size starts from an empty schedule
    return {
        "size": size,
        "istio": istio_count,
        "ticks_per_second": rollout_ticks / args.measure,
        "lateness_p50": _percentile(recent, 50),
        "lateness_p99": _percentile(recent, 99),
        "cpu_ms_per_tick": 1000 * cpu / rollout_ticks if rollout_ticks else float("nan"),
        "queries_per_round": queries / (args.measure / 10),
        "redis_bytes_per_rollout": memory,
        "abort_p50_ms": 1000 * statistics.median(abort_latencies),
        "abort_p99_ms": 1000 * _percentile(abort_latencies, 99),
        "burst_lateness_p99": burst_p99,
        "registered_in": registered_in,
        "all_at_step_one": all_at_step_one,
        **{f"cores {name}": value for name, value in cores.items()},
        **{f"burst cores {name}": value for name, value in burst_cores.items()},
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000", help="comma-separated numbers of rollouts")
    parser.add_argument("--measure", type=float, default=60.0, help="seconds measured per size")
    parser.add_argument("--aborts", type=int, default=100)
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument(
        "--istio-share", type=float, default=0.0, help="share of the rollouts that are Istio canaries (0..1)"
    )
    parser.add_argument(
        "--warmup", type=float, default=30.0, help="seconds between all rollouts progressing and measuring"
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes (each one core's worth)")
    parser.add_argument("--keep", metavar="DIR", help="run in DIR and keep the processes' logs there")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    sizes = [int(size) for size in args.sizes.split(",")]

    with contextlib.ExitStack() as cleanup:
        base = (
            Path(args.keep)
            if args.keep
            else Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="autocanary-scale-")))
        )
        base.mkdir(parents=True, exist_ok=True)
        sandbox = SandboxProcess(base / "sandbox", "--reconcile-delay", "0.05", "--ready-after", "0.5")
        (base / "redis").mkdir()
        redis_process = RedisProcess(base / "redis")
        processes: Processes | None = None
        rows = []
        try:
            endpoints = sandbox.start()
            redis_process.start()
            env = {
                "AUTOCANARY_REDIS_URL": redis_process.url,
                "AUTOCANARY_KUBECONFIG": endpoints.kubeconfig,
                "AUTOCANARY_PROMETHEUS_URL": endpoints.prometheus or "",
                "AUTOCANARY_METRICS_LAG_SECONDS": "1",
            }
            processes = Processes(env, base)
            for index in range(args.workers):
                processes.start(f"worker-{index + 1}", ["worker"])
            processes.start("scheduler", ["scheduler"])
            store = RolloutStore.from_url(redis_process.url)
            celery = Celery(broker=redis_process.url)
            for size in sizes:
                rows.append(run_size(size, endpoints, store, celery, processes, sandbox, redis_process, args))
        finally:
            if processes:
                processes.stop_all()
            redis_process.stop()
            sandbox.stop()

    lines = [
        "| rollouts (Istio) | rollout ticks/s | tick lateness p50 / p99 s | worker CPU ms per rollout tick"
        " | Prometheus queries per 10 s round | Redis bytes per rollout | abort p50 / p99 ms"
        " | start-up burst lateness p99 s | registered in s | all at step 1 after s"
        " | cores: workers / sandbox / Redis / scheduler | in the burst |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['size']:,} ({row['istio']:,}) | {row['ticks_per_second']:.1f}"
            f" | {row['lateness_p50']:.2f} / {row['lateness_p99']:.2f}"
            f" | {row['cpu_ms_per_tick']:.2f} | {row['queries_per_round']:.1f} | {row['redis_bytes_per_rollout']:,.0f}"
            f" | {row['abort_p50_ms']:.0f} / {row['abort_p99_ms']:.0f} | {row['burst_lateness_p99']:.1f}"
            f" | {row['registered_in']:.1f} | {row['all_at_step_one']:.1f}"
            f" | {row['cores workers, all processes']:.2f} / {row['cores sandbox']:.2f} / {row['cores redis']:.2f}"
            f" / {row['cores scheduler']:.2f}"
            f" | {row['burst cores workers, all processes']:.2f} / {row['burst cores sandbox']:.2f}"
            f" / {row['burst cores redis']:.2f} / {row['burst cores scheduler']:.2f} |"
        )
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        note = (
            f"`python -m bench.scale --sizes {args.sizes} --measure {args.measure:g} --aborts {args.aborts}"
            f" --istio-share {args.istio_share:g} --workers {args.workers}`:"
            f" {args.workers} worker processes (solo pool), one scheduler, the sandbox and its Prometheus,"
            " a private Redis with AOF, all on this 2-core machine; policy interval 10 s;"
            " no request traffic (see the script's docstring). Steady state: measured after every rollout"
            f" progresses and a {args.warmup:g} s warm-up. Start-up burst: all N registered at once by"
            f" {REGISTERING_CLIENTS} clients; its lateness p99, how long registering took, and how long until"
            " every rollout was at step 1 (canary weight written and observed) from the first registration."
            " Cores: CPU seconds per second of each part (a worker with its control consumer and relay), while"
            " measuring and during the burst; the machine has 2."
        )
        write_section(Path(__file__).with_name("RESULTS.md"), "scale", "Scale (concurrent rollouts)", note, table)


if __name__ == "__main__":
    main()

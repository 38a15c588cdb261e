"""Reads and aborts while dashboards hold event streams open on one rollout.

Starts the sandbox, a private Redis, two workers, the scheduler and one API process; registers
a rollout held at 50 %; opens N Server-Sent Event streams on it; then times `GET
/v1/rollouts/{id}` from one client and, last, an abort from its 202 to stable 100 % in the
cluster, while every stream stays open. Run once with no streams for the baseline.

    .venv/bin/python -m bench.streams                       # N = 0 and 80
    .venv/bin/python -m bench.streams --streams 0,80,200 --no-write
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
from kubernetes import client, config

from adapters.redis_store import RolloutStore
from bench.results import write_section
from bench.stack import api_stack, wait_until
from policies import load_policy
from rollouts import Rollout
from rollouts.log import LogEntry
from sandbox.cluster import Endpoints
from sandbox.processes import stop_on_sigterm
from sandbox.watchers import EventStreams

GROUP, VERSION = "serving.knative.dev", "v1"
TOKEN = "bench-secret"  # noqa: S105 (a bench's own token)
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def _service(endpoints: Endpoints, namespace: str, name: str) -> client.CustomObjectsApi:
    api_client = config.new_client_from_config(config_file=endpoints.kubeconfig)  # type: ignore[no-untyped-call]
    api = client.CustomObjectsApi(api_client)
    env = [{"name": "TARGET", "value": "World"}]
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [{"image": "hello", "env": env}]}}},
    }
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "services", body)
    wait_until(lambda: _latest(api, namespace, name) == f"{name}-00001", 30, "the first revision")
    v2 = {"spec": {"containers": [{"image": "hello", "env": [{"name": "TARGET", "value": "v2"}]}]}}
    pinned: dict[str, Any] = {"spec": {"traffic": [{"revisionName": f"{name}-00001", "percent": 100}], "template": v2}}
    api.patch_namespaced_custom_object(GROUP, VERSION, namespace, "services", name, pinned)
    wait_until(lambda: _latest(api, namespace, name) == f"{name}-00002", 30, "the second revision")
    return api


def _latest(api: client.CustomObjectsApi, namespace: str, name: str) -> str | None:
    found = cast(dict[str, Any], api.get_namespaced_custom_object(GROUP, VERSION, namespace, "services", name))
    latest = (found.get("status") or {}).get("latestReadyRevisionName")
    return str(latest) if latest else None


def _canary_percent(api: client.CustomObjectsApi, namespace: str, name: str) -> int:
    found = cast(dict[str, Any], api.get_namespaced_custom_object(GROUP, VERSION, namespace, "services", name))
    traffic = (found.get("status") or {}).get("traffic") or []
    return sum(int(t.get("percent") or 0) for t in traffic if t.get("revisionName") == f"{name}-00002")


def _one_size(endpoints: Endpoints, store: RolloutStore, url: str, streams: int, reads: int) -> dict[str, float]:
    namespace, name = f"bench-{uuid.uuid4().hex[:6]}", "watched"
    api = _service(endpoints, namespace, name)
    now = datetime.now(UTC)
    policy = load_policy("default", {"steps": [50], "step_min_duration": "1h", "interval": "2s"})
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
    wait_until(lambda: _canary_percent(api, namespace, name) == 50, 60, "the canary at 50 %")
    watchers = EventStreams(url, rollout.id, TOKEN, streams).start()
    try:
        if not watchers.wait_connected(60):
            raise SystemExit(f"bench.streams: only {watchers.connected} of {streams} streams connected")
        timings = []
        with httpx.Client(base_url=url, headers=HEADERS, timeout=10) as http:
            for _ in range(reads):
                started = time.perf_counter()
                http.get(f"/v1/rollouts/{rollout.id}").raise_for_status()
                timings.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            http.post(f"/v1/rollouts/{rollout.id}/abort", json={"reason": "bench"}).raise_for_status()
            wait_until(lambda: _canary_percent(api, namespace, name) == 0, 30, "stable 100 %")
            abort_ms = (time.perf_counter() - started) * 1000
        lost = streams - watchers.connected
    finally:
        watchers.stop()
    quantiles = statistics.quantiles(timings, n=100)
    return {"p50": statistics.median(timings), "p99": quantiles[98], "abort": abort_ms, "lost": lost}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="0,80", help="comma-separated numbers of open streams")
    parser.add_argument("--reads", type=int, default=500, help="timed GET /v1/rollouts/{id} per size")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    rows = []
    with api_stack("autocanary-streams-", f"bench:operator:{TOKEN}") as stack:
        for count in (int(n) for n in args.streams.split(",")):
            figures = _one_size(stack.endpoints, stack.store, stack.url, count, args.reads)
            row = (
                f"| {count} | {figures['p50']:.1f} | {figures['p99']:.1f} | {figures['abort']:.0f}"
                f" | {figures['lost']:.0f} |"
            )
            print(row, flush=True)
            rows.append(row)
    table = (
        "| open streams | GET /v1/rollouts/{id} p50 ms | p99 ms | abort to stable 100 % ms | streams lost |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows)
    )
    print(table)
    if not args.no_write:
        note = (
            f"`python -m bench.streams`: one API process (uvicorn, h11), {args.reads} sequential reads from one client"
            " while the streams are open, then one abort timed from its request to stable 100 % in the sandbox"
            " (2 workers, scheduler). The sandbox and all processes share this 2-core machine."
        )
        write_section(
            Path(__file__).with_name("RESULTS.md"), "streams", "Reads and aborts under open event streams", note, table
        )


if __name__ == "__main__":
    main()

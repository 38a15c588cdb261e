"""The chaos suite: the product's promises under faults, against real processes.

    python -m bench.chaos [--only NAME,...] [--no-write]

Each experiment runs 10 rollouts (good and bad canaries, load on every service) on the sandbox,
a real Prometheus scraping it, a private Redis with AOF, two `autocanary worker` processes and a
scheduler, injects its fault, waits for every rollout to end and checks what a user relies on:

| column | what is checked |
|---|---|
| right end | promoted if good, rolled back if bad, aborted if aborted, superseded if edited by hand |
| stuck | not ended within the experiment's deadline |
| traffic matches | the cluster carries what the phase says (canary 100 / 0, or the operator's split untouched) |
| events lost | the event log lacks its `created` entry or the entry of its end |
| aborts lost | an abort answered (stored) that did not end the rollout `aborted` |
| abort p99 | from storing the abort to stable 100 % in the cluster |

Experiments: `aborts-then-sigkill` (five aborts, both workers SIGKILLed 30-100 ms later),
`sigkill-every-10s` (a worker SIGKILLed every ~10 s while rollouts run),
`prometheus-down-60s-rollback` and `-hold` (`on_insufficient_traffic` either way, 20 s grace),
`edit-racing` (an operator sets a split by hand on three rollouts while they advance at 1 s
ticks), `edits-at-rest` (the same between ticks 5 s apart), `redis-sigterm` and `redis-sigkill`
(Redis restarted mid-rollout, AOF with fsync always), `scheduler-failover` (two schedulers, one
SIGKILLed mid-rollout) and `two-schedulers` (two running side by side throughout).
The fast, deterministic cases (the 409 race through the guard, the lost-abort path, the
outage window) are tests in `make test`.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from celery import Celery
from kubernetes import client, config

from adapters.redis_store import RolloutStore
from bench.results import write_section
from policies import load_policy
from rollouts import ManualActionKind, Phase, Rollout
from rollouts.log import LogEntry
from sandbox.processes import BackgroundLoad, Processes, RedisProcess, SandboxProcess, stop_on_sigterm
from sandbox.prometheus import PrometheusServer

GROUP, VERSION = "serving.knative.dev", "v1"
POLICY: dict[str, Any] = {
    "steps": [20, 50],
    "step_min_duration": "6s",
    "interval": "1s",
    "min_requests_per_step": 10,
    "progress_deadline": "60s",
    "max_insufficient_duration": "60s",
    "on_insufficient_traffic": "hold",
    "alpha_errors": 0.001,
    "alpha_latency": 0.001,
}
BAD = "0.9"


@dataclass
class Stack:
    store: RolloutStore
    api: client.CustomObjectsApi
    processes: Processes
    prometheus: PrometheusServer
    gateway: str
    celery: Celery
    redis: RedisProcess

    def services(self, namespace: str, count: int, bad: set[int]) -> list[str]:
        names = [f"svc{i}" for i in range(count)]
        for name in names:
            self._apply(namespace, name, "World")
        for i, name in enumerate(names):
            self._ready(namespace, name, f"{name}-00001")
            self._apply(namespace, name, "Knative", pin=f"{name}-00001", error_rate=BAD if i in bad else None)
        for name in names:
            self._ready(namespace, name, f"{name}-00002")
        return names

    def _apply(
        self, namespace: str, name: str, target: str, pin: str | None = None, error_rate: str | None = None
    ) -> None:
        env = [{"name": "TARGET", "value": target}]
        if error_rate:
            env.append({"name": "SANDBOX_ERROR_RATE", "value": error_rate})
        body: dict[str, Any] = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"template": {"spec": {"containers": [{"image": "hello", "env": env}]}}},
        }
        if pin:
            body["spec"]["traffic"] = [{"revisionName": pin, "percent": 100}]
            self.api.patch_namespaced_custom_object(GROUP, VERSION, namespace, "services", name, body)
        else:
            self.api.create_namespaced_custom_object(GROUP, VERSION, namespace, "services", body)

    def _ready(self, namespace: str, name: str, revision: str) -> None:
        def ready() -> bool:
            found: Any = self.api.get_namespaced_custom_object(GROUP, VERSION, namespace, "services", name)
            return bool((found.get("status") or {}).get("latestReadyRevisionName") == revision)

        _wait(ready, 30, f"{revision} ready")

    def register(self, namespace: str, service: str, **overrides: Any) -> str:
        rollout = Rollout.new(
            id=uuid.uuid4().hex[:12],
            namespace=namespace,
            service=service,
            stable_revision=f"{service}-00001",
            canary_revision=f"{service}-00002",
            policy=load_policy("default", {**POLICY, **overrides}),
            now=datetime.now(UTC),
        )
        self.store.create(rollout, LogEntry("created", "chaos", rollout.created_at, "pending", actor="chaos"))
        return rollout.id

    def canary_percent(self, namespace: str, name: str) -> int:
        found: Any = self.api.get_namespaced_custom_object(GROUP, VERSION, namespace, "services", name)
        canary = f"{name}-00002"
        return sum(t.get("percent", 0) for t in found["spec"].get("traffic", []) if t.get("revisionName") == canary)

    def abort(self, rollout_id: str) -> None:
        """As the API does before its 202: stored, then the wake-up."""
        command_id = self.store.commands.submit(rollout_id, ManualActionKind.ABORT, "chaos", "chaos", time.time())
        self.celery.send_task("autocanary.control", args=[command_id], queue="control")


@dataclass
class Outcome:
    name: str
    rollouts: int = 0
    right: int = 0
    stuck: int = 0
    traffic_ok: int = 0
    events_lost: int = 0
    aborts_lost: int = 0
    abort_seconds: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _judge(
    stack: Stack,
    outcome: Outcome,
    namespace: str,
    ids: dict[str, str],
    expected: dict[str, Phase],
    deadline: float,
    edited: dict[str, int] | None = None,
) -> None:
    """Wait for every rollout to end (or the deadline), then fill in the columns."""
    while time.monotonic() < deadline:
        if all(r is not None and r.is_terminal for r in stack.store.get_many(list(ids.values()))):
            break
        time.sleep(0.5)
    outcome.rollouts = len(ids)
    for name, rollout_id in ids.items():
        rollout = stack.store.get(rollout_id)
        if rollout is None:
            outcome.events_lost += 1
            outcome.notes.append(f"{name}: the rollout is gone")
            continue
        if not rollout.is_terminal:
            outcome.stuck += 1
            outcome.notes.append(f"{name} stuck in {rollout.phase.value}: {rollout.reason}")
            continue
        if rollout.phase is expected[name]:
            outcome.right += 1
        else:
            outcome.notes.append(
                f"{name} ended {rollout.phase.value}, expected {expected[name].value}: {rollout.reason}"
            )
        canary = stack.canary_percent(namespace, name)
        wanted = {Phase.SUCCEEDED: 100, Phase.ROLLED_BACK: 0, Phase.ABORTED: 0}.get(rollout.phase)
        if edited and name in edited and rollout.phase is Phase.SUPERSEDED:
            wanted = edited[name]
        outcome.traffic_ok += canary == wanted
        kinds = [e.kind for e in stack.store.events(rollout_id)]
        final = {Phase.SUCCEEDED: "promoted", Phase.ROLLED_BACK: "rolled_back", Phase.ABORTED: "aborted"}
        if not kinds or kinds[0] != "created" or final.get(rollout.phase, rollout.phase.value) not in kinds:
            outcome.events_lost += 1
        if expected[name] is Phase.ABORTED and rollout.phase is not Phase.ABORTED:
            outcome.aborts_lost += 1


def _start(
    stack: Stack, namespace: str, count: int, bad: set[int], **overrides: Any
) -> tuple[list[str], dict[str, str], BackgroundLoad]:
    names = stack.services(namespace, count, bad)
    load = BackgroundLoad(stack.gateway, [f"{n}.{namespace}.example.com" for n in names], rate=10)
    ids = {name: stack.register(namespace, name, **overrides) for name in names}
    return names, ids, load


def aborts_then_sigkill(stack: Stack) -> Outcome:
    outcome = Outcome("aborts-then-sigkill")
    namespace = f"abort-{uuid.uuid4().hex[:6]}"
    names, ids, load = _start(stack, namespace, 10, {7}, step_min_duration="40s", steps=[50])
    expected = {name: Phase.SUCCEEDED for name in names} | {names[7]: Phase.ROLLED_BACK}
    try:
        _wait(lambda: all(stack.canary_percent(namespace, n) == 50 for n in names), 60, "every canary at 50 %")
        aborted = names[:5]
        sent = {}
        for name in aborted:
            stack.abort(ids[name])
            sent[name] = time.monotonic()
            expected[name] = Phase.ABORTED
        time.sleep(random.uniform(0.03, 0.1))
        for worker in ("worker-1", "worker-2"):
            stack.processes.kill(worker)
        time.sleep(0.5)
        for worker in ("worker-1", "worker-2"):
            stack.processes.start(worker, ["worker"])
        waiting = set(aborted)
        until = time.monotonic() + 60
        while waiting and time.monotonic() < until:
            for name in list(waiting):
                if stack.canary_percent(namespace, name) == 0:
                    outcome.abort_seconds.append(time.monotonic() - sent[name])
                    waiting.discard(name)
            time.sleep(0.05)
        _judge(stack, outcome, namespace, ids, expected, time.monotonic() + 120)
    finally:
        load.stop()
    return outcome


def sigkill_every_10s(stack: Stack) -> Outcome:
    outcome = Outcome("sigkill-every-10s")
    namespace = f"kill-{uuid.uuid4().hex[:6]}"
    bad = {1, 4, 8}
    names, ids, load = _start(stack, namespace, 10, bad)
    expected = {name: Phase.ROLLED_BACK if i in bad else Phase.SUCCEEDED for i, name in enumerate(names)}
    try:
        deadline = time.monotonic() + 150
        rng = random.Random(3)
        while time.monotonic() < deadline:
            if all(r is not None and r.is_terminal for r in stack.store.get_many(list(ids.values()))):
                break
            time.sleep(rng.uniform(8, 12))
            victim = rng.choice(["worker-1", "worker-2"])
            stack.processes.kill(victim)
            time.sleep(0.5)
            stack.processes.start(victim, ["worker"])
        _judge(stack, outcome, namespace, ids, expected, deadline)
    finally:
        load.stop()
    return outcome


def _prometheus_down_60s(action: str) -> Callable[[Stack], Outcome]:
    def experiment(stack: Stack) -> Outcome:
        outcome = Outcome(f"prometheus-down-60s-{action}")
        namespace = f"blind-{action}-{uuid.uuid4().hex[:6]}"
        overrides = {"step_min_duration": "10s", "on_insufficient_traffic": action, "max_insufficient_duration": "20s"}
        names, ids, load = _start(stack, namespace, 10, {9}, **overrides)
        expected = {name: Phase.SUCCEEDED for name in names} | {names[9]: Phase.ROLLED_BACK}
        try:
            _wait(lambda: all(stack.canary_percent(namespace, n) == 20 for n in names[:9]), 60, "the first step")
            stack.prometheus.stop()
            time.sleep(60)
            stack.prometheus.start()
            _judge(stack, outcome, namespace, ids, expected, time.monotonic() + 150)
        finally:
            load.stop()
        return outcome

    return experiment


def edits_at_rest(stack: Stack) -> Outcome:
    """Hand edits between two ticks (5 s apart): the next tick sees them and stops writing."""
    outcome = Outcome("edits-at-rest")
    namespace = f"rest-{uuid.uuid4().hex[:6]}"
    names, ids, load = _start(stack, namespace, 10, set(), step_min_duration="10s", interval="5s")
    expected = {name: Phase.SUCCEEDED for name in names}
    edited: dict[str, int] = {}
    try:
        _wait(lambda: all(stack.canary_percent(namespace, n) >= 20 for n in names), 60, "the first step")
        for name in names[:3]:
            edited[name] = 30
            traffic = [
                {"revisionName": f"{name}-00001", "percent": 70},
                {"revisionName": f"{name}-00002", "percent": 30},
            ]
            stack.api.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "services", name, {"spec": {"traffic": traffic}}
            )
            expected[name] = Phase.SUPERSEDED
        _judge(stack, outcome, namespace, ids, expected, time.monotonic() + 150, edited)
    finally:
        load.stop()
    return outcome


def two_schedulers(stack: Stack) -> Outcome:
    outcome = Outcome("two-schedulers")
    namespace = f"twice-{uuid.uuid4().hex[:6]}"
    stack.processes.start("scheduler-3", ["scheduler"])  # both run throughout; one leads
    names, ids, load = _start(stack, namespace, 10, {3})
    expected = {name: Phase.SUCCEEDED for name in names} | {names[3]: Phase.ROLLED_BACK}
    try:
        _judge(stack, outcome, namespace, ids, expected, time.monotonic() + 150)
    finally:
        load.stop()
        stack.processes.kill("scheduler-3")
    return outcome


def edit_racing(stack: Stack) -> Outcome:
    outcome = Outcome("edit-racing")
    namespace = f"edit-{uuid.uuid4().hex[:6]}"
    names, ids, load = _start(stack, namespace, 10, set(), step_min_duration="3s")
    expected = {name: Phase.SUCCEEDED for name in names}
    edited: dict[str, int] = {}
    try:
        _wait(lambda: all(stack.canary_percent(namespace, n) >= 20 for n in names), 60, "the first step")
        for name in names[:3]:  # an operator takes these over by hand while autocanary advances them
            edited[name] = 40
            traffic = [
                {"revisionName": f"{name}-00001", "percent": 60},
                {"revisionName": f"{name}-00002", "percent": 40},
            ]
            stack.api.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "services", name, {"spec": {"traffic": traffic}}
            )
            expected[name] = Phase.SUPERSEDED
            time.sleep(random.uniform(0.1, 0.6))
        _judge(stack, outcome, namespace, ids, expected, time.monotonic() + 120, edited)
    finally:
        load.stop()
    return outcome


def _restart_redis(how: str) -> Callable[[Stack], Outcome]:
    def experiment(stack: Stack) -> Outcome:
        outcome = Outcome(f"redis-{how}")
        namespace = f"redis-{how}-{uuid.uuid4().hex[:6]}"
        bad = {2, 6}
        names, ids, load = _start(stack, namespace, 10, bad)
        expected = {name: Phase.ROLLED_BACK if i in bad else Phase.SUCCEEDED for i, name in enumerate(names)}
        try:
            _wait(lambda: all(stack.canary_percent(namespace, n) >= 20 for n in names), 60, "the first step")
            if how == "sigkill":
                stack.redis.kill()  # only what the append-only file holds survives
            else:
                stack.redis.stop()
            time.sleep(1)
            stack.redis.start()
            _judge(stack, outcome, namespace, ids, expected, time.monotonic() + 150)
        finally:
            load.stop()
        return outcome

    return experiment


def scheduler_failover(stack: Stack) -> Outcome:
    outcome = Outcome("scheduler-failover")
    namespace = f"leader-{uuid.uuid4().hex[:6]}"
    stack.processes.start("scheduler-2", ["scheduler"])  # two schedulers: one leads, one waits
    names, ids, load = _start(stack, namespace, 10, {5})
    expected = {name: Phase.SUCCEEDED for name in names} | {names[5]: Phase.ROLLED_BACK}
    try:
        _wait(lambda: all(stack.canary_percent(namespace, n) >= 20 for n in names), 60, "the first step")
        stack.processes.kill("scheduler")  # whichever leads, one of them is gone now
        _judge(stack, outcome, namespace, ids, expected, time.monotonic() + 150)
    finally:
        load.stop()
        stack.processes.start("scheduler", ["scheduler"])
    return outcome


EXPERIMENTS: dict[str, Callable[[Stack], Outcome]] = {
    "aborts-then-sigkill": aborts_then_sigkill,
    "sigkill-every-10s": sigkill_every_10s,
    "prometheus-down-60s-rollback": _prometheus_down_60s("rollback"),
    "prometheus-down-60s-hold": _prometheus_down_60s("hold"),
    "edit-racing": edit_racing,
    "edits-at-rest": edits_at_rest,
    "redis-sigterm": _restart_redis("sigterm"),
    "redis-sigkill": _restart_redis("sigkill"),
    "scheduler-failover": scheduler_failover,
    "two-schedulers": two_schedulers,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(EXPERIMENTS), help="comma-separated experiments to run")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="autocanary-chaos-") as folder:
        base = Path(folder)
        sandbox = SandboxProcess(
            base / "sandbox", "--no-prometheus", "--reconcile-delay", "0.05", "--ready-after", "0.2"
        )
        (base / "redis").mkdir()
        redis_process = RedisProcess(base / "redis")
        processes: Processes | None = None
        prometheus: PrometheusServer | None = None
        try:
            endpoints = sandbox.start()
            prometheus = PrometheusServer(
                base / "prometheus", [endpoints.metrics.removeprefix("http://").removesuffix("/metrics")]
            )
            prometheus.start()
            redis_process.start()
            env = {
                "AUTOCANARY_REDIS_URL": redis_process.url,
                "AUTOCANARY_KUBECONFIG": endpoints.kubeconfig,
                "AUTOCANARY_PROMETHEUS_URL": prometheus.url,
                "AUTOCANARY_PROMETHEUS_TIMEOUT_SECONDS": "2",
                "AUTOCANARY_METRICS_LAG_SECONDS": "1",
                "AUTOCANARY_LEASE_SECONDS": "5",
                "AUTOCANARY_CLAIM_SECONDS": "6",
                "AUTOCANARY_SETTLE_TIMEOUT_SECONDS": "5",
                "AUTOCANARY_NOTIFY_RECLAIM_SECONDS": "3",
            }
            processes = Processes(env, base)
            for name in ("worker-1", "worker-2"):
                processes.start(name, ["worker"])
            processes.start("scheduler", ["scheduler"])
            configuration = client.Configuration()
            config.load_kube_config(config_file=endpoints.kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
            api = client.CustomObjectsApi(client.ApiClient(configuration))
            stack = Stack(
                RolloutStore.from_url(redis_process.url),
                api,
                processes,
                prometheus,
                endpoints.gateway,
                Celery(broker=redis_process.url),
                redis_process,
            )
            for name in chosen:
                print(f"{name}: running", flush=True)
                outcome = EXPERIMENTS[name](stack)
                outcomes.append(outcome)
                for note in outcome.notes:
                    print(f"  {note}", flush=True)
        finally:
            if processes:
                processes.stop_all()
            if prometheus:
                prometheus.stop()
            redis_process.stop()
            sandbox.stop()
    lines = [
        "| experiment | rollouts | right end | stuck | traffic matches the phase | events lost | aborts lost"
        " | abort to stable p99 s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        p99 = f"{float(np.percentile(o.abort_seconds, 99)):.2f}" if o.abort_seconds else "-"
        lines.append(
            f"| {o.name} | {o.rollouts} | {o.right} | {o.stuck} | {o.traffic_ok} | {o.events_lost}"
            f" | {o.aborts_lost} | {p99} |"
        )
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        note = (
            f"`python -m bench.chaos --only {','.join(chosen)}`: the sandbox, a real Prometheus scraping it, a private"
            " Redis with AOF, two `autocanary worker` processes and one scheduler on this 2-core machine; 10 rollouts"
            " an experiment, load on every service (see the script's docstring for the columns)."
        )
        write_section(
            Path(__file__).with_name("RESULTS.md"), "chaos", "Chaos (faults against real processes)", note, table
        )


if __name__ == "__main__":
    main()

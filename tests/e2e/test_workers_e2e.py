"""The workers as they run in production: real Celery worker processes, the scheduler, Redis with
AOF, the sandbox cluster over HTTP and a real Prometheus scraping it. Crashes, outages, restarts.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery
from kubernetes import client

from adapters.redis_store import RolloutStore
from policies import load_policy
from rollouts import ManualActionKind, Phase, Rollout
from rollouts.log import LogEntry
from sandbox.cluster import Endpoints
from sandbox.processes import BackgroundLoad, Processes, RedisProcess, SandboxProcess
from sandbox.prometheus import PrometheusServer, free_port
from sandbox.watchers import EventStreams
from tests.knative import create, custom_objects, hello_service, knative_backends, new_revision, service_ready, wait_for

pytestmark = pytest.mark.slow

POLICY: dict[str, Any] = {
    "steps": [20, 50],
    "step_min_duration": "3s",
    "interval": "1s",
    "min_requests_per_step": 10,
    "progress_deadline": "30s",
    "max_insufficient_duration": "30s",
    # On a loaded 2-core CI machine the load generator sometimes falls far behind; a good canary
    # then waits for its requests instead of being rolled back for a lack of them (the rollback
    # path for insufficient traffic is covered tick by tick in tests/scenario).
    "on_insufficient_traffic": "hold",
    # 6 good canaries per run: a small alpha keeps a false rollback (and a flaky test) far away,
    # while a canary failing half its requests is still caught within a tick or two.
    "alpha_errors": 0.001,
    "alpha_latency": 0.001,
}

BAD_ERROR_RATE = "0.9"
"""How often a bad canary fails. At 12 requests/s and 3 s steps a canary sees only about 25 requests
before it would be promoted; at 50 % errors about one in seven such canaries does not reach the
evidence of alpha 0.001 in time (`python -m bench.crash_test_power`, bench/RESULTS.md; CI met one).
At 90 % the miss rate is about 1 in 10,000 per canary: the test checks crash safety, not the
statistics' power."""


@dataclass
class Stack:
    endpoints: Endpoints
    prometheus: PrometheusServer
    redis: RedisProcess
    store: RolloutStore
    processes: Processes

    def register(self, namespace: str, service: str, **overrides: Any) -> str:
        rollout = Rollout.new(
            id=uuid.uuid4().hex[:12],
            namespace=namespace,
            service=service,
            stable_revision=f"{service}-00001",
            canary_revision=f"{service}-00002",
            policy=load_policy("default", {**POLICY, **overrides}),
            now=_now(),
        )
        self.store.create(rollout, LogEntry("created", "e2e", rollout.created_at, "pending", actor="test"))
        return rollout.id

    def get(self, rollout_id: str) -> Rollout:
        found = self.store.get(rollout_id)
        assert found is not None
        return found

    def wait_terminal(self, ids: list[str], timeout: float, load: BackgroundLoad | None = None) -> dict[str, Rollout]:
        """Every rollout ended; polled twice a second (the load generator shares this interpreter)."""
        deadline = time.monotonic() + timeout
        while True:
            rollouts = {i: self.get(i) for i in ids}
            if all(r.is_terminal for r in rollouts.values()):
                return rollouts
            if time.monotonic() > deadline:
                waiting = [f"{r.service}: {r.phase.value} ({r.reason})" for r in rollouts.values() if not r.is_terminal]
                raise AssertionError(f"after {timeout:g}s still running: {waiting}; load so far: {_load_summary(load)}")
            time.sleep(0.5)

    def canary_weights_written(self, namespace: str, service: str, canary: str) -> list[int]:
        url = f"{self.endpoints.apiserver}/_sandbox/traffic-history/{namespace}/{service}"
        history = httpx.get(url, timeout=5).json()
        return [
            sum(t.get("percent", 0) for t in entry["traffic"] if t.get("revisionName") == canary) for entry in history
        ]


def _load_summary(load: BackgroundLoad | None) -> str:
    if load is None:
        return "n/a"
    return f"{load.sent} sent, {load.failed} failed to connect, {load.shed} shed"


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("stack")
    sandbox = SandboxProcess(base / "sandbox", "--no-prometheus", "--reconcile-delay", "0.05", "--ready-after", "0.2")
    redis_process = RedisProcess(base / "redis")
    (base / "redis").mkdir()
    prometheus: PrometheusServer | None = None
    processes: Processes | None = None
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
            "AUTOCANARY_LEASE_SECONDS": "3",
            "AUTOCANARY_CLAIM_SECONDS": "4",
            "AUTOCANARY_BATCH_SIZE": "5",
            "AUTOCANARY_SETTLE_TIMEOUT_SECONDS": "5",
            "AUTOCANARY_NOTIFY_RECLAIM_SECONDS": "3",
        }
        processes = Processes(env, base)
        processes.start("worker-1", ["worker"])
        processes.start("worker-2", ["worker"])
        processes.start("scheduler", ["scheduler"])
        yield Stack(endpoints, prometheus, redis_process, RolloutStore.from_url(redis_process.url), processes)
    finally:
        if processes:
            processes.stop_all()
        if prometheus:
            prometheus.stop()
        redis_process.stop()
        sandbox.stop()


def _services(stack: Stack, namespace: str, count: int, bad: set[int]) -> list[str]:
    api = custom_objects(stack.endpoints)
    names = [f"svc{i}" for i in range(count)]
    for name in names:
        create(api, namespace, hello_service(name, "World"))
    for i, name in enumerate(names):
        service_ready(api, namespace, name, f"{name}-00001")
        env = {"SANDBOX_ERROR_RATE": BAD_ERROR_RATE} if i in bad else {}
        new_revision(api, namespace, name, "Knative", pin=f"{name}-00001", **env)
    for name in names:
        service_ready(api, namespace, name, f"{name}-00002")
    return names


def test_workers_killed_mid_tick_lose_nothing(stack: Stack) -> None:
    namespace = f"crash-{uuid.uuid4().hex[:6]}"
    # Twelve services at 12 requests/s each: the sandbox serves them beside whatever the other
    # test process runs (`make test` runs two); twenty once starved it of CPU there.
    bad = {0, 2, 4, 7, 9, 11}
    names = _services(stack, namespace, 12, bad)
    load = BackgroundLoad(stack.endpoints.gateway, [f"{n}.{namespace}.example.com" for n in names], rate=12)
    try:
        ids = [stack.register(namespace, name) for name in names]
        rng = random.Random(7)
        for _kill in range(4):  # SIGKILL a worker mid-flight, restart it a moment later
            time.sleep(2.5)
            victim = f"worker-{rng.choice([1, 2])}"
            stack.processes.kill(victim)
            time.sleep(0.5)
            stack.processes.start(victim, ["worker"])
        rollouts = stack.wait_terminal(ids, timeout=240, load=load)
    finally:
        load.stop()
    target = knative_backends(stack.endpoints).target
    for i, (name, rollout_id) in enumerate(zip(names, ids, strict=True)):
        rollout = rollouts[rollout_id]
        canary = f"{name}-00002"
        expected = Phase.ROLLED_BACK if i in bad else Phase.SUCCEEDED
        if rollout.phase is not expected:  # say everything that explains it: events, writes, verdicts
            story = [f"{e.at:%H:%M:%S.%f} {e.kind}: {e.message} {dict(e.data)}" for e in stack.store.events(rollout_id)]
            writes = stack.canary_weights_written(namespace, name, canary)
            pytest.fail(
                f"{name} ended {rollout.phase.value}, expected {expected.value}; writes {writes}\n" + "\n".join(story)
            )
        split = target.get(namespace, name).split
        assert split.get(canary, 0) == (0 if i in bad else 100), (name, split)
        weights = stack.canary_weights_written(namespace, name, canary)
        if i in bad:
            assert weights[-1] == 0
            first_drop = next(k for k in range(1, len(weights)) if weights[k] < weights[k - 1])
            assert all(w == 0 for w in weights[first_drop:]), (name, weights)  # never back up after the rollback
            assert weights[:first_drop] == sorted(weights[:first_drop]), (name, weights)
        else:
            assert weights == sorted(weights), (name, weights)  # a stale worker never wrote an older weight
        kinds = [e.kind for e in stack.store.events(rollout_id)]
        assert kinds[0] == "created" and kinds[-1] in ("promoted", "rolled_back"), (name, kinds)
    # What `kubectl describe ksvc` shows: each outcome recorded as a Kubernetes LogEntry, even when the
    # worker that decided it was killed before delivering it (another worker's relay takes it over).
    core = client.CoreV1Api(custom_objects(stack.endpoints).api_client)
    for i, name in enumerate(names):
        final = "CanaryRolledBack" if i in bad else "CanaryPromoted"

        def recorded(service: str = name, reason: str = final) -> bool:
            found = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={service}").items
            return reason in {event.reason for event in found}

        wait_for(recorded, 20, f"a {final} event on {name}")


def test_aborts_answered_while_the_workers_are_killed_are_all_carried_out(stack: Stack) -> None:
    namespace = f"abort-{uuid.uuid4().hex[:6]}"
    names = _services(stack, namespace, 5, set())
    load = BackgroundLoad(stack.endpoints.gateway, [f"{n}.{namespace}.example.com" for n in names], rate=10)
    celery = Celery("e2e-api", broker=stack.redis.url)
    try:
        ids = [stack.register(namespace, name, step_min_duration="5m", steps=[50]) for name in names]
        for rollout_id in ids:
            _wait_phase(stack, rollout_id, lambda r: r.applied_canary_weight == 50, 60, "the canary at 50 %")
        for rollout_id in ids:  # as the API does before answering 202: stored, then the wake-up
            command_id = stack.store.commands.submit(rollout_id, ManualActionKind.ABORT, "oncall", "e2e", time.time())
            celery.send_task("autocanary.control", args=[command_id], queue="control")
        time.sleep(random.Random(11).uniform(0.03, 0.1))
        for victim in ("worker-1", "worker-2"):  # before any of them could finish
            stack.processes.kill(victim)
        time.sleep(0.5)
        for victim in ("worker-1", "worker-2"):
            stack.processes.start(victim, ["worker"])
        rollouts = stack.wait_terminal(ids, timeout=60, load=load)  # the broker would hold them 300 s
    finally:
        load.stop()
    target = knative_backends(stack.endpoints).target
    for name, rollout_id in zip(names, ids, strict=True):
        assert rollouts[rollout_id].phase is Phase.ABORTED, (name, rollouts[rollout_id].reason)
        assert target.get(namespace, name).split.get(f"{name}-00002", 0) == 0
        assert [e.kind for e in stack.store.events(rollout_id)].count("abort") == 1
    assert stack.store.commands.pending() == 0


def _wait_phase(stack: Stack, rollout_id: str, check: Callable[[Rollout], bool], timeout: float, what: str) -> Rollout:
    def reached() -> Rollout | None:
        rollout = stack.get(rollout_id)
        return rollout if check(rollout) else None

    return wait_for(reached, timeout, what)


def test_prometheus_outage_holds_the_rollout_until_it_returns(stack: Stack) -> None:
    namespace = f"blind-{uuid.uuid4().hex[:6]}"
    (name,) = _services(stack, namespace, 1, set())
    load = BackgroundLoad(stack.endpoints.gateway, [f"{name}.{namespace}.example.com"], rate=30)
    try:
        rollout_id = stack.register(namespace, name, step_min_duration="4s")
        _wait_phase(stack, rollout_id, lambda r: r.phase is Phase.PROGRESSING, 30, "progressing")
        stack.prometheus.stop()
        time.sleep(2)
        before = stack.get(rollout_id)
        time.sleep(8)
        during = stack.get(rollout_id)
        assert during.phase is Phase.PROGRESSING
        assert (during.step_index, during.canary_weight) == (before.step_index, before.canary_weight)
        assert during.checks.errored > before.checks.errored
        assert "metrics unavailable" in during.reason
        stack.prometheus.start()
        done = stack.wait_terminal([rollout_id], timeout=60)[rollout_id]
    finally:
        load.stop()
    assert done.phase is Phase.SUCCEEDED, done.reason


def test_rollouts_and_events_survive_a_redis_restart(stack: Stack) -> None:
    namespace = f"restart-{uuid.uuid4().hex[:6]}"
    (name,) = _services(stack, namespace, 1, set())
    load = BackgroundLoad(stack.endpoints.gateway, [f"{name}.{namespace}.example.com"], rate=30)
    try:
        rollout_id = stack.register(namespace, name, step_min_duration="4s")
        _wait_phase(stack, rollout_id, lambda r: r.phase is Phase.PROGRESSING, 30, "progressing")
        events_before = stack.store.events(rollout_id)
        stack.redis.kill()  # SIGKILL: only what the append-only file holds survives
        time.sleep(1)
        stack.redis.start()
        survived = stack.get(rollout_id)
        assert survived.phase is Phase.PROGRESSING
        assert [e.id for e in stack.store.events(rollout_id)][: len(events_before)] == [e.id for e in events_before]
        done = stack.wait_terminal([rollout_id], timeout=90)[rollout_id]
    finally:
        load.stop()
    assert done.phase is Phase.SUCCEEDED, done.reason
    assert [e.kind for e in stack.store.events(rollout_id)][-1] == "promoted"


def test_worker_and_scheduler_probes_follow_redis(stack: Stack, tmp_path: Path) -> None:
    ports = {"worker": free_port(), "scheduler": free_port()}
    probes = Processes(stack.processes.env, tmp_path)
    for kind, port in ports.items():
        probes.start(f"probed-{kind}", [kind, "--health-port", str(port)])

    def readiness() -> dict[str, int] | None:
        try:
            return {k: httpx.get(f"http://127.0.0.1:{p}/readyz", timeout=2).status_code for k, p in ports.items()}
        except httpx.HTTPError:
            return None  # not listening yet

    try:
        wait_for(lambda: readiness() == {"worker": 200, "scheduler": 200}, 30, "both probes ready")
        assert all(httpx.get(f"http://127.0.0.1:{p}/healthz").status_code == 200 for p in ports.values())
        stack.redis.kill()
        try:
            wait_for(lambda: readiness() == {"worker": 503, "scheduler": 503}, 15, "both probes unready")
            body = httpx.get(f"http://127.0.0.1:{ports['worker']}/readyz", timeout=5).json()
            assert body == {"ready": False, "checks": {"redis": False}}
        finally:
            stack.redis.start()
        wait_for(lambda: readiness() == {"worker": 200, "scheduler": 200}, 30, "both probes ready again")
    finally:
        probes.stop_all()


def test_eighty_open_event_streams_leave_reads_and_aborts_working(stack: Stack, tmp_path: Path) -> None:
    """80 dashboards follow one rollout's live events through the real API process; a read still
    answers, and an abort still brings the stable back to 100 % in the cluster."""
    namespace = f"watched-{uuid.uuid4().hex[:6]}"
    (name,) = _services(stack, namespace, 1, set())
    port = free_port()
    api = Processes({**stack.processes.env, "AUTOCANARY_TOKENS": "oncall:operator:op-secret"}, tmp_path)
    api.start("api", ["api", "--port", str(port)])
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": "Bearer op-secret"}
    streams: EventStreams | None = None
    try:
        wait_for(lambda: _answers(f"{url}/healthz"), 30, "the API up")
        rollout_id = stack.register(namespace, name, step_min_duration="5m", steps=[50])
        _wait_phase(stack, rollout_id, lambda r: r.applied_canary_weight == 50, 60, "the canary at 50 %")
        streams = EventStreams(url, rollout_id, "op-secret", 80).start()
        assert streams.wait_connected(30), (streams.connected, streams.errors)

        read = httpx.get(f"{url}/v1/rollouts/{rollout_id}", headers=headers, timeout=5)
        assert (read.status_code, read.json()["canary_weight"]) == (200, 50)
        abort = httpx.post(f"{url}/v1/rollouts/{rollout_id}/abort", json={"reason": "watched"}, headers=headers)
        assert abort.status_code == 202
        _wait_phase(stack, rollout_id, lambda r: r.phase is Phase.ABORTED, 30, "the abort carried out")
        assert knative_backends(stack.endpoints).target.get(namespace, name).split.get(f"{name}-00002", 0) == 0

        streams.join(30)  # every stream saw the abort live and then its end
        assert streams.ended == 80, (streams.ended, streams.errors)
        assert all("abort" in kinds and kinds[-1] == "end" for kinds in streams.kinds)
    finally:
        if streams:
            streams.stop()
        api.stop_all()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False

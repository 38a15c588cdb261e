"""Redis fails over mid-rollout: a primary, two replicas and three Sentinels (real `redis-server`
and `redis-sentinel` processes), the API, two workers and the scheduler reaching Redis through the
Sentinels, the sandbox serving load and its Prometheus.

Aborts are answered 202 and the primary is SIGKILLed at once, while other canaries are mid-step.
The Sentinels promote a replica; every process finds it; every rollout ends as it should (good
canaries promoted, a failing one rolled back, every aborted one aborted with stable at 100 % in
the cluster), and no command answered 202 is lost, because it was on a replica before the 202.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from rollouts import Phase
from sandbox.cluster import Endpoints
from sandbox.processes import BackgroundLoad, SentinelGroup
from tests.e2e.stack import Stack, running
from tests.knative import create, custom_objects, hello_service, knative_backends, new_revision, service_ready, wait_for

pytestmark = pytest.mark.slow

DEPLOYER = "failover-deploy-secret"
OPERATOR = "failover-oncall-secret"
POLICY: dict[str, Any] = {
    "steps": [20, 50],
    "step_min_duration": "5s",
    "interval": "1s",
    "min_requests_per_step": 10,
    "progress_deadline": "60s",
    "on_insufficient_traffic": "hold",
    "alpha_errors": 0.001,
    "alpha_latency": 0.001,
}
GOOD, BAD, ABORTED = ("good-a", "good-b"), ("bad",), ("abort-a", "abort-b", "abort-c")


@pytest.fixture(scope="module")
def redis_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    group = SentinelGroup(tmp_path_factory.mktemp("sentinel-redis"), replicas=2)
    try:
        group.start()
        yield group
    finally:
        group.stop()


@pytest.fixture(scope="module")
def stack(sandbox: Endpoints, redis_group: SentinelGroup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tokens = f"pipeline:deployer:{DEPLOYER},oncall:operator:{OPERATOR}"
    base = tmp_path_factory.mktemp("failover-stack")
    with running(sandbox, base, tokens, workers=2, sentinels=redis_group) as (api, store):
        yield Stack(sandbox, api, store)


def _services(stack: Stack, namespace: str) -> list[str]:
    api = custom_objects(stack.endpoints)
    names = [*GOOD, *BAD, *ABORTED]
    for name in names:
        create(api, namespace, hello_service(name, "v1"))
    for name in names:
        service_ready(api, namespace, name, f"{name}-00001")
        new_revision(
            api, namespace, name, "v2", pin=f"{name}-00001", **({"SANDBOX_ERROR_RATE": "0.9"} if name in BAD else {})
        )
    for name in names:
        service_ready(api, namespace, name, f"{name}-00002")
    return names


def _register(stack: Stack, namespace: str, service: str, **overrides: Any) -> str:
    body = {
        "target": {"kind": "knative", "namespace": namespace, "service": service},
        "policy_overrides": {**POLICY, **overrides},
    }
    created = httpx.post(f"{stack.api}/v1/rollouts", json=body, headers=_auth(DEPLOYER), timeout=30)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _canary_weight(stack: Stack, rollout_id: str) -> int | None:
    """The canary weight the rollout last confirmed in the cluster."""
    rollout = stack.store.get(rollout_id)
    return rollout.applied_canary_weight if rollout else None


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_primary_killed_mid_rollout_loses_no_answered_abort(
    stack: Stack, redis_group: SentinelGroup, namespace: str
) -> None:
    names = _services(stack, namespace)
    load = BackgroundLoad(stack.endpoints.gateway, [f"{n}.{namespace}.example.com" for n in names], rate=12)
    try:
        ids = {name: _register(stack, namespace, name) for name in (*GOOD, *BAD)}
        # The ones to abort hold at 50 % until told otherwise.
        ids |= {name: _register(stack, namespace, name, steps=[50], step_min_duration="5m") for name in ABORTED}
        for name in ABORTED:

            def at_half(rollout_id: str = ids[name]) -> bool:
                return _canary_weight(stack, rollout_id) == 50

            wait_for(at_half, 60, f"{name} at 50 %")
        for name in ABORTED:
            answer = httpx.post(f"{stack.api}/v1/rollouts/{ids[name]}/abort", headers=_auth(OPERATOR), timeout=10)
            assert answer.status_code == 202, answer.text
        mid_step = [name for name in (*GOOD, *BAD) if _canary_weight(stack, ids[name]) in (20, 50)]
        old_primary = redis_group.primary.port
        redis_group.primary.kill()  # the moment after the 202s: a command not on a replica would be lost
        wait_for(lambda: redis_group.current_primary() not in (None, old_primary), 30, "a replica promoted")
        ended = {name: stack.wait_terminal(rollout_id, timeout=120) for name, rollout_id in ids.items()}
    finally:
        load.stop()
    expected = {**dict.fromkeys(GOOD, Phase.SUCCEEDED), **dict.fromkeys(BAD, Phase.ROLLED_BACK)}
    expected |= dict.fromkeys(ABORTED, Phase.ABORTED)
    assert {name: rollout.phase for name, rollout in ended.items()} == expected, {
        name: rollout.reason for name, rollout in ended.items()
    }
    target = knative_backends(stack.endpoints).target
    for name in names:
        canary_share = target.get(namespace, name).split.get(f"{name}-00002", 0)
        assert canary_share == (100 if name in GOOD else 0), (name, canary_share)
    for name in ABORTED:
        kinds = [entry.kind for entry in stack.store.events(ids[name])]
        assert kinds.count("abort") == 1, (name, kinds)
    assert stack.store.commands.pending() == 0
    assert mid_step, "the failover came while the other canaries were mid-rollout"

"""Gateway API canaries end to end: the API, a worker and the scheduler as real processes, the
sandbox's HTTPRoute, Services and Deployments over HTTP, its gateway serving load by the route's
rules, and a real Prometheus holding the Istio series per backend Service, read through the
`gateway-api-istio` policy's custom dialect."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from adapters.redis_store import RolloutStore
from rollouts import Phase
from sandbox.cluster import Endpoints
from sandbox.processes import BackgroundLoad, Processes, RedisProcess
from sandbox.prometheus import free_port
from tests.e2e.test_istio_e2e import Stack, _answers
from tests.gateway import GATEWAY, GATEWAY_VERSION, host, shop_app
from tests.istio import api_client
from tests.knative import wait_for

pytestmark = pytest.mark.slow

DEPLOYER = "gateway-deploy-secret"
OVERRIDES: dict[str, Any] = {
    "steps": [20, 50],
    "step_min_duration": "3s",
    "interval": "1s",
    "min_requests_per_step": 10,
    "progress_deadline": "30s",
    "on_insufficient_traffic": "hold",
    "alpha_errors": 0.001,
    "alpha_latency": 0.001,
}


@pytest.fixture(scope="module")
def stack(sandbox: Endpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base: Path = tmp_path_factory.mktemp("gateway-stack")
    (base / "redis").mkdir()
    redis_process = RedisProcess(base / "redis")
    processes: Processes | None = None
    try:
        redis_process.start()
        port = free_port()
        env = {
            "AUTOCANARY_REDIS_URL": redis_process.url,
            "AUTOCANARY_KUBECONFIG": sandbox.kubeconfig,
            "AUTOCANARY_PROMETHEUS_URL": sandbox.prometheus or "",
            "AUTOCANARY_TOKENS": f"pipeline:deployer:{DEPLOYER}",
            "AUTOCANARY_METRICS_LAG_SECONDS": "1",
            "AUTOCANARY_METRICS_MIN_WINDOW_SECONDS": "2",
            "AUTOCANARY_LEASE_SECONDS": "3",
            "AUTOCANARY_CLAIM_SECONDS": "4",
        }
        processes = Processes(env, base)
        processes.start("api", ["api", "--port", str(port)])
        processes.start("worker", ["worker"])
        processes.start("scheduler", ["scheduler"])
        api = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(f"{api}/healthz"), timeout=30, what="the API")
        yield Stack(sandbox, api, RolloutStore.from_url(redis_process.url))
    finally:
        if processes:
            processes.stop_all()
        redis_process.stop()


def _register(stack: Stack, namespace: str, **overrides: Any) -> str:
    body = {
        "target": {
            "kind": "gateway-api",
            "namespace": namespace,
            "http_route": "shop",
            "stable_backend": "shop-stable",
            "canary_backend": "shop-canary",
        },
        "policy": "gateway-api-istio",
        "policy_overrides": {**OVERRIDES, **overrides},
    }
    created = httpx.post(
        f"{stack.api}/v1/rollouts", json=body, headers={"Authorization": f"Bearer {DEPLOYER}"}, timeout=30
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _rules(stack: Stack, namespace: str) -> list[dict[str, Any]]:
    custom = client.CustomObjectsApi(api_client(stack.endpoints))
    found = custom.get_namespaced_custom_object(GATEWAY, GATEWAY_VERSION, namespace, "httproutes", "shop")
    assert isinstance(found, dict)
    return list(found["spec"]["rules"])


def _weights(stack: Stack, namespace: str) -> dict[str, int]:
    main = next(r for r in _rules(stack, namespace) if r.get("name") == "main")
    return {b["name"]: b["weight"] for b in main["backendRefs"]}


def _shop(stack: Stack, namespace: str, **canary_env: str) -> BackgroundLoad:
    shop_app(stack.endpoints, namespace, **canary_env)
    apps = client.AppsV1Api(api_client(stack.endpoints))

    def available() -> bool:
        return all(
            (
                (apps.read_namespaced_deployment(n, namespace).status or client.V1DeploymentStatus()).available_replicas
                or 0
            )
            > 0
            for n in ("shop-v1", "shop-v2")
        )

    wait_for(available, what="both Deployments available")
    return BackgroundLoad(stack.endpoints.gateway, [host(namespace)], rate=25)


def test_a_failing_gateway_api_canary_is_rolled_back_on_its_custom_series(stack: Stack, namespace: str) -> None:
    load = _shop(stack, namespace, SANDBOX_ERROR_RATE="0.9")
    try:
        rollout = stack.wait_terminal(_register(stack, namespace), timeout=120)
    finally:
        load.stop()
    assert rollout.phase is Phase.ROLLED_BACK, rollout.reason
    assert "5xx" in rollout.reason
    assert _weights(stack, namespace) == {"shop-stable": 100, "shop-canary": 0}
    verdicts = [e for e in stack.store.events(rollout.id) if e.kind == "verdict" and e.data.get("canary_requests")]
    assert verdicts, "judged on the backends' Istio series through the custom dialect"


def test_a_header_step_then_weights_promotes_and_removes_its_rule(stack: Stack, namespace: str) -> None:
    load = _shop(stack, namespace)
    beta = BackgroundLoad(stack.endpoints.gateway, [host(namespace)], rate=10, headers={"x-group": "beta"})
    steps = [{"match": {"headers": {"x-group": {"exact": "beta"}}}}, 50]
    try:
        rollout_id = _register(stack, namespace, steps=steps)
        wait_for(
            lambda: any(r.get("name") == "autocanary-shop-canary" for r in _rules(stack, namespace)),
            timeout=60,
            what="autocanary's match rule",
        )
        rollout = stack.wait_terminal(rollout_id, timeout=120)
    finally:
        load.stop()
        beta.stop()
    assert rollout.phase is Phase.SUCCEEDED, rollout.reason
    assert [r.get("name") for r in _rules(stack, namespace)] == ["main"]
    assert _weights(stack, namespace) == {"shop-stable": 0, "shop-canary": 100}

"""Knative tags and Gateway API canaries end to end: the API, a worker and the scheduler as real
processes, the sandbox over HTTP (a Knative Service whose canary is tried at its tag URL first; an
HTTPRoute, its Services and Deployments), its gateway serving load, and a real Prometheus holding
the queue-proxy series and the Istio series per backend Service, the latter read through the
`gateway-api-istio` policy's custom dialect."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kubernetes import client

from rollouts import Phase
from sandbox.cluster import Endpoints
from sandbox.processes import AUTOCANARY, BackgroundLoad
from tests.e2e.stack import Stack, running
from tests.gateway import GATEWAY, GATEWAY_VERSION, host, shop_app
from tests.istio import api_client
from tests.knative import create, custom_objects, get, hello_service, new_revision, service_ready, wait_for

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
    with running(sandbox, tmp_path_factory.mktemp("routing-stack"), f"pipeline:deployer:{DEPLOYER}") as (api, store):
        yield Stack(sandbox, api, store)


def _register(stack: Stack, namespace: str, target: dict[str, Any] | None = None, **overrides: Any) -> str:
    body = {
        "target": target
        or {
            "kind": "gateway-api",
            "namespace": namespace,
            "http_route": "shop",
            "stable_backend": "shop-stable",
            "canary_backend": "shop-canary",
        },
        "policy": "gateway-api-istio" if target is None else "default",
        "policy_overrides": {**OVERRIDES, **overrides},
    }
    created = httpx.post(f"{stack.api}/v1/rollouts", json=body, headers=_DEPLOY, timeout=30)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


_DEPLOY = {"Authorization": f"Bearer {DEPLOYER}"}


def _create_with_cli(stack: Stack, namespace: str) -> str:
    """As a pipeline registers it: `autocanary rollout create NS --http-route ...`."""
    backends = ["--stable-backend", "shop-stable", "--canary-backend", "shop-canary", "--policy", "gateway-api-istio"]
    settings = [f"--set={key}={json.dumps(value)}" for key, value in OVERRIDES.items()]
    done = subprocess.run(  # noqa: S603 (our own command line)
        [AUTOCANARY, "rollout", "create", namespace, "--http-route", "shop", *backends, *settings],
        env={"AUTOCANARY_SERVER": stack.api, "AUTOCANARY_TOKEN": DEPLOYER, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


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
        rollout = stack.wait_terminal(_create_with_cli(stack, namespace), timeout=120)
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


def test_a_knative_canary_tried_at_its_tag_first_then_by_weight_is_promoted(stack: Stack, namespace: str) -> None:
    api = custom_objects(stack.endpoints)
    create(api, namespace, hello_service("hello", "World"))
    service_ready(api, namespace, "hello", "hello-00001")
    new_revision(api, namespace, "hello", "Knative", pin="hello-00001")
    service_ready(api, namespace, "hello", "hello-00002")
    users = BackgroundLoad(stack.endpoints.gateway, [f"hello.{namespace}"], rate=25)
    testers = BackgroundLoad(stack.endpoints.gateway, [f"canary-hello.{namespace}"], rate=10)
    target = {"kind": "knative", "namespace": namespace, "service": "hello"}
    steps = [{"match": {"tag": "canary"}}, 50]
    try:
        rollout_id = _register(stack, namespace, target, steps=steps)

        def tag_url() -> str | None:
            shown = httpx.get(f"{stack.api}/v1/rollouts/{rollout_id}", headers=_DEPLOY, timeout=10).json()
            url = shown["target"]["canary_url"]
            return str(url) if url else None

        url = wait_for(tag_url, timeout=60, what="the canary's tag URL")
        assert url == f"http://canary-hello.{namespace}.example.com"
        tried = httpx.get(stack.endpoints.gateway, headers={"Host": url.removeprefix("http://")}, timeout=10)
        assert tried.text.strip() == "Hello Knative!"  # reachable at its tag before any user traffic
        rollout = stack.wait_terminal(rollout_id, timeout=120)
    finally:
        users.stop()
        testers.stop()
    assert rollout.phase is Phase.SUCCEEDED, rollout.reason
    events = [e.message for e in stack.store.events(rollout.id) if e.kind == "step_advanced"]
    assert "tag canary" in events[0] and "50 %" in events[1]
    service = get(api, namespace, "services", "hello")
    assert service["spec"]["traffic"] == [
        {"revisionName": "hello-00001", "percent": 0, "latestRevision": False},
        {"revisionName": "hello-00002", "percent": 100, "latestRevision": False},
    ]  # the tag is taken out with the final write

"""Registering Gateway API rollouts over HTTP: the API's checks against the sandbox's HTTPRoute,
Services and Deployments (real kubernetes client, real Redis), each refusal naming the request
field; the dialect a Gateway API target needs; match steps by method and header accepted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapters.factory import kubernetes_backends
from adapters.gateway_api import GatewayApiTarget
from adapters.kubernetes.api import KubernetesApi
from adapters.redis_store import RolloutStore
from api.app import create_app
from api.deps import Dependencies
from api.settings import ApiSettings
from rollouts.ports import TargetRef
from sandbox.cluster import Endpoints
from tests.api.test_api import DEPLOY, TOKENS, VIEW, Queue
from tests.gateway import shop_app
from tests.knative import wait_for


@pytest.fixture
def api(store: RolloutStore, sandbox: Endpoints) -> Iterator[TestClient]:
    backends = kubernetes_backends(KubernetesApi.from_kubeconfig(sandbox.kubeconfig))
    app = create_app(ApiSettings(tokens=TOKENS, max_body_bytes=8192), Dependencies(store, backends, Queue(), {}))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def shop(sandbox: Endpoints, namespace: str) -> str:
    shop_app(sandbox, namespace)
    target = GatewayApiTarget(KubernetesApi.from_kubeconfig(sandbox.kubeconfig))
    ref = TargetRef("gateway-api", namespace, "shop", "shop-stable", "shop-canary")
    wait_for(lambda: all(target.version(ref, s).is_ready for s in ("shop-stable", "shop-canary")), what="pods")
    return namespace


def _gateway(namespace: str, **fields: Any) -> dict[str, Any]:
    return {
        "kind": "gateway-api",
        "namespace": namespace,
        "http_route": "shop",
        "stable_backend": "shop-stable",
        "canary_backend": "shop-canary",
        **fields,
    }


def test_a_gateway_api_rollout_is_registered_with_its_rule_and_custom_dialect(
    api: TestClient, store: RolloutStore, shop: str
) -> None:
    body = {"target": _gateway(shop), "policy": "gateway-api-istio"}
    created = api.post("/v1/rollouts", json=body, headers=DEPLOY)
    assert created.status_code == 201, created.text
    shown = api.get(created.headers["Location"], headers=VIEW).json()
    assert shown["target"] == {
        "kind": "gateway-api",
        "namespace": shop,
        "name": "shop",
        "stable": "shop-stable",
        "canary": "shop-canary",
        "route": "main",
        "host": None,
        "tag": None,
        "canary_url": None,
    }
    assert shown["resolved_policy"]["custom_metrics"]["version_label"] == "destination_service_name"
    stored = store.get(shown["id"])
    assert stored is not None and stored.target_kind == "gateway-api" and stored.policy.dialect == "custom"
    assert api.get("/v1/rollouts?kind=gateway-api", headers=VIEW).json()["items"][0]["id"] == shown["id"]
    again = api.post("/v1/rollouts", json=body, headers=DEPLOY)
    assert again.status_code == 409  # one active rollout per HTTPRoute


@pytest.mark.parametrize(
    ("body", "status", "field", "words"),
    [
        ({"target": {"http_route": "nope"}}, 404, "target.http_route", "HTTPRoute"),
        ({"target": {"rule": "other"}}, 422, "target.rule", "has no rule other"),
        ({"target": {"canary_backend": "shop-preview"}}, 422, "target.canary_backend", "not found"),
        ({"target": {"rule": "-bad-"}}, 422, "target.rule", "pattern"),
        ({"policy": "default"}, 422, "policy", "dialect custom"),
        (
            {"policy_overrides": {"steps": [{"match": {"tag": "canary"}}, 50]}},
            422,
            "policy_overrides.steps[0]",
            "tag steps need a knative target",
        ),
        (
            {"policy_overrides": {"steps": [{"match": {"cookie": {"beta": "1"}}}, 50]}, "policy": "default"},
            422,
            "policy",
            "dialect custom",
        ),
    ],
)
def test_a_refusal_names_the_field(
    api: TestClient, store: RolloutStore, shop: str, body: dict[str, Any], status: int, field: str, words: str
) -> None:
    request = {"policy": "gateway-api-istio", **body, "target": _gateway(shop, **body.get("target", {}))}
    refused = api.post("/v1/rollouts", json=request, headers=DEPLOY)
    assert refused.status_code == status, refused.text
    error = refused.json()
    assert error["field"] == field and words in error["message"], error
    assert api.get("/v1/rollouts", headers=VIEW).json()["items"] == []  # nothing half-written


def test_match_steps_by_method_and_header_are_accepted(api: TestClient, shop: str) -> None:
    steps = [{"match": {"method": "GET", "headers": {"x-group": {"prefix": "beta"}}}}, 50]
    body = {"target": _gateway(shop), "policy": "gateway-api-istio", "policy_overrides": {"steps": steps}}
    created = api.post("/v1/rollouts", json=body, headers=DEPLOY)
    assert created.status_code == 201, created.text

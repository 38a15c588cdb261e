"""Contract tests of the Gateway API adapters (target, router) against the sandbox API server,
over real HTTP: the managed rule's weights and nothing else, 409s retried, foreign edits stopped
by the guard, a match rule added before the managed one and removed, registration's checks naming
their fields; and the sandbox routing requests by the rules as written."""

from __future__ import annotations

import json
from typing import Any, cast

import httpx
import pytest
from kubernetes import client

from adapters.gateway_api import GatewayApiRouter, GatewayApiTarget, own_rule_name
from adapters.kubernetes.api import KubernetesApi
from rollouts import ForeignChange, PermanentError, SetTraffic, ValidationError
from rollouts.errors import TargetNotFound
from rollouts.ports import RequestMatch, RoutePlan, TargetRef, TargetRequest, TargetState
from sandbox.cluster import Endpoints
from tests.gateway import GATEWAY, GATEWAY_VERSION, backend, host, http_route, shop_app, split_rule
from tests.istio import api_client
from tests.knative import wait_for

OTHER_RULE = {
    "name": "static",
    "matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
    "backendRefs": [backend("shop-stable", 1)],
}


@pytest.fixture
def custom(sandbox: Endpoints) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client(sandbox))


@pytest.fixture
def shop(sandbox: Endpoints, namespace: str, kube: KubernetesApi) -> TargetRef:
    """The shop's objects, an unrelated rule before the managed one; the stable at 100 %."""
    shop_app(sandbox, namespace, OTHER_RULE, split_rule(100, 0))
    target = GatewayApiTarget(kube)
    request = TargetRequest("gateway-api", namespace, "shop", "shop-stable", "shop-canary")
    ref = TargetRef("gateway-api", namespace, "shop", "shop-stable", "shop-canary", "main")
    wait_for(lambda: target.version(ref, "shop-canary").is_ready, what="shop-v2 available")
    return target.resolve(request)


def _rules(custom: client.CustomObjectsApi, ref: TargetRef) -> list[dict[str, Any]]:
    found = custom.get_namespaced_custom_object(GATEWAY, GATEWAY_VERSION, ref.namespace, "httproutes", ref.name)
    assert isinstance(found, dict)
    return list(found["spec"]["rules"])


def test_registration_finds_the_rule_by_its_backends_and_keeps_its_name(shop: TargetRef) -> None:
    assert (shop.route, shop.stable, shop.canary) == ("main", "shop-stable", "shop-canary")
    assert shop.route_match == '[{"path":{"type":"PathPrefix","value":"/"}}]'


def test_set_weight_writes_the_managed_rule_and_leaves_the_other_untouched(
    kube: KubernetesApi, custom: client.CustomObjectsApi, shop: TargetRef
) -> None:
    state = GatewayApiRouter(kube).set_weight(shop, SetTraffic(stable=75, canary=25))
    assert state.split == {"shop-stable": 75, "shop-canary": 25}
    assert state.is_live(SetTraffic(stable=75, canary=25), shop.stable, shop.canary)
    rules = _rules(custom, shop)
    assert rules[0] == OTHER_RULE
    assert [(b["name"], b["weight"], b["port"]) for b in rules[1]["backendRefs"]] == [
        ("shop-stable", 75, 80),
        ("shop-canary", 25, 80),
    ]


def test_a_match_rule_goes_before_the_managed_one_routes_and_is_removed_again(
    sandbox: Endpoints, kube: KubernetesApi, custom: client.CustomObjectsApi, shop: TargetRef
) -> None:
    router = GatewayApiRouter(kube)
    matches = (RequestMatch("header", "beta", "x-group"), RequestMatch("method", "GET"))
    plan = RoutePlan(SetTraffic(stable=100, canary=0), matches)
    state = router.set_match_route(shop, plan)
    rules = _rules(custom, shop)
    assert [r.get("name") for r in rules] == ["static", own_rule_name(shop), "main"]
    assert rules[1]["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/"},
            "headers": [{"name": "x-group", "type": "Exact", "value": "beta"}],
            "method": "GET",
        }
    ]
    assert rules[1]["backendRefs"] == [{"name": "shop-canary", "port": 80}]
    assert state.own_route and router.verify(shop, plan)

    def served(headers: dict[str, str], method: str = "GET") -> str:
        answer = httpx.request(method, f"{sandbox.gateway}/", headers={"Host": host(shop.namespace), **headers})
        return answer.text.strip()

    assert {served({"x-group": "beta"}) for _ in range(10)} == {"Hello shop v2!"}
    assert {served({"x-group": "beta"}, "POST") for _ in range(5)} == {"Hello shop v1!"}
    assert {served({}) for _ in range(10)} == {"Hello shop v1!"}

    router.remove_managed_routes(shop)
    assert [r.get("name") for r in _rules(custom, shop)] == ["static", "main"]
    assert not router.verify(shop, plan) and router.verify(shop, RoutePlan(SetTraffic(stable=100, canary=0)))


def test_the_gateway_splits_by_the_written_weights(sandbox: Endpoints, kube: KubernetesApi, shop: TargetRef) -> None:
    GatewayApiRouter(kube).set_weight(shop, SetTraffic(stable=50, canary=50))
    with httpx.Client(base_url=sandbox.gateway, headers={"Host": host(shop.namespace)}) as gateway:
        answers = [gateway.get("/cart").text.strip() for _ in range(200)]
        static = {gateway.get("/static/app.js").text.strip() for _ in range(20)}
    assert 60 < answers.count("Hello shop v2!") < 140  # 50 % of 200, well inside 5 sigma
    assert static == {"Hello shop v1!"}  # the longer prefix wins


def test_a_foreign_edit_seen_by_the_guard_writes_nothing(
    kube: KubernetesApi, custom: client.CustomObjectsApi, shop: TargetRef
) -> None:
    rules = _rules(custom, shop)
    rules[1]["backendRefs"].append(backend("shop-preview", 10))
    patch = {"spec": {"rules": rules}}
    custom.patch_namespaced_custom_object(GATEWAY, GATEWAY_VERSION, shop.namespace, "httproutes", shop.name, patch)

    def guard(state: TargetState) -> None:
        if state.pinned(shop.stable, shop.canary) is None:
            raise ForeignChange(f"someone else routes to {sorted(state.split)}")

    with pytest.raises(ForeignChange, match="shop-preview"):
        GatewayApiRouter(kube).set_weight(shop, SetTraffic(stable=90, canary=10), guard)
    assert _rules(custom, shop) == rules


def test_a_conflict_is_re_read_and_retried(
    kube: KubernetesApi, custom: client.CustomObjectsApi, shop: TargetRef
) -> None:
    interfered: list[str] = []

    def guard(state: TargetState) -> None:
        if not interfered:  # someone else writes between our read and our write, once
            interfered.append(state.resource_version)
            body = http_route(OTHER_RULE, split_rule(100, 0), hostnames=(host(shop.namespace), "www.shop.example.com"))
            patch = {"spec": {"hostnames": body["spec"]["hostnames"]}}
            custom.patch_namespaced_custom_object(
                GATEWAY, GATEWAY_VERSION, shop.namespace, "httproutes", shop.name, patch
            )

    state = GatewayApiRouter(kube).set_weight(shop, SetTraffic(stable=95, canary=5), guard)
    assert state.split == {"shop-stable": 95, "shop-canary": 5} and interfered


def test_a_rule_that_is_gone_is_permanent(
    kube: KubernetesApi, custom: client.CustomObjectsApi, shop: TargetRef
) -> None:
    patch = {"spec": {"rules": [OTHER_RULE]}}
    custom.patch_namespaced_custom_object(GATEWAY, GATEWAY_VERSION, shop.namespace, "httproutes", shop.name, patch)
    assert GatewayApiTarget(kube).get(shop.namespace, shop.name).split == {"(rule to both backends gone)": 100}
    with pytest.raises(PermanentError, match="no rule main any more"):
        GatewayApiRouter(kube).set_weight(shop, SetTraffic(stable=90, canary=10))


@pytest.mark.parametrize(
    ("request_fields", "field", "words"),
    [
        ({"name": "nope"}, "http_route", "HTTPRoute"),
        ({"route": "missing"}, "rule", "has no rule missing (static, main)"),
        ({"route": "7"}, "rule", "has 2 rules; no rule 7"),
        ({"route": "static"}, "canary_backend", "rule static has no backendRef shop-canary"),
        ({"canary": "shop-preview"}, "canary_backend", "Service"),
        ({"stable": "shop-canary"}, "canary_backend", "must differ from stable_backend"),
    ],
)
def test_registration_names_the_field_at_fault(
    kube: KubernetesApi, shop: TargetRef, request_fields: dict[str, str], field: str, words: str
) -> None:
    fields = {"name": "shop", "stable": "shop-stable", "canary": "shop-canary", "route": "", **request_fields}
    request = TargetRequest("gateway-api", shop.namespace, **fields)
    with pytest.raises((ValidationError, TargetNotFound)) as refused:
        GatewayApiTarget(kube).resolve(request)
    error = refused.value
    found = error.field if isinstance(error, TargetNotFound) else cast(ValidationError, error).problems[0].field
    assert found == field and words in str(error)


def test_registration_refuses_a_backend_without_available_pods(
    sandbox: Endpoints, kube: KubernetesApi, namespace: str
) -> None:
    shop_app(sandbox, namespace, SANDBOX_NEVER_READY="1")
    target = GatewayApiTarget(kube)
    ref = TargetRef("gateway-api", namespace, "shop", "shop-stable", "shop-canary")
    wait_for(lambda: target.version(ref, "shop-stable").is_ready, what="shop-v1 available")
    with pytest.raises(ValidationError) as refused:
        target.resolve(TargetRequest("gateway-api", namespace, "shop", "shop-stable", "shop-canary"))
    assert refused.value.problems[0].field == "canary_backend"
    assert "selects no Deployment with available pods" in str(refused.value)


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ({"backendRefs": [{"name": "shop-stable", "port": 80, "weight": 1000001}]}, "less than or equal to 1000000"),
        ({"backendRefs": [{"name": "shop-stable"}]}, "Must have port for Service reference"),
        ({"matches": [{"path": {"type": "PathPrefix", "value": "shop"}}]}, "must be an absolute path"),
        ({"matches": [{"method": "FETCH"}]}, 'Unsupported value: "FETCH"'),
        ({"matches": [{"headers": [{"name": "a b", "value": "x"}]}]}, "should match"),
    ],
)
def test_the_sandbox_refuses_what_the_crd_schema_refuses(
    custom: client.CustomObjectsApi, namespace: str, rule: dict[str, Any], words: str
) -> None:
    with pytest.raises(client.exceptions.ApiException) as refused:
        custom.create_namespaced_custom_object(GATEWAY, GATEWAY_VERSION, namespace, "httproutes", http_route(rule))
    message = json.loads(str(refused.value.body))["message"]
    assert refused.value.status == 422 and words in message
    assert message.startswith('HTTPRoute.gateway.networking.k8s.io "shop" is invalid: spec.rules[0]')

"""Contract tests of the Istio adapters (target, router) against the sandbox API server, over real
HTTP: the managed route's weights and nothing else, 409s retried, foreign edits stopped by the
guard, match routes added and removed, and registration's checks naming their fields."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from adapters.istio import IstioRouter, IstioTarget, own_route_name
from adapters.kubernetes.api import KubernetesApi
from rollouts import ForeignChange, PermanentError, SetTraffic, TransientError, ValidationError
from rollouts.errors import TargetNotFound
from rollouts.ports import RequestMatch, RoutePlan, TargetRef, TargetRequest, TargetState
from sandbox.cluster import Endpoints
from tests.istio import (
    ISTIO,
    ISTIO_VERSION,
    api_client,
    create_deployment,
    create_istio,
    deployment,
    destination_rule,
    virtual_service,
    weighted_route,
)
from tests.knative import wait_for

OTHER_ROUTE = {
    "name": "ratings",
    "match": [{"uri": {"prefix": "/ratings"}}],
    "route": [{"destination": {"host": "ratings"}}],
}


@pytest.fixture
def custom(sandbox: Endpoints) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client(sandbox))


@pytest.fixture
def reviews(sandbox: Endpoints, custom: client.CustomObjectsApi, namespace: str, kube: KubernetesApi) -> TargetRef:
    """The guide's objects with a second, unrelated route before the managed one; v1 at 100 %."""
    create_deployment(sandbox, namespace, deployment("reviews-v1", "v1", "v1"))
    create_deployment(sandbox, namespace, deployment("reviews-v2", "v2", "v2"))
    create_istio(custom, namespace, "destinationrules", destination_rule())
    create_istio(custom, namespace, "virtualservices", virtual_service(OTHER_ROUTE, weighted_route(100, 0)))
    ref = TargetRef("istio", namespace, "reviews", "v1", "v2", "primary", "reviews")
    target = IstioTarget(kube)
    wait_for(lambda: target.version(ref, "v2").is_ready, what="reviews-v2 available")
    return ref


def _http(custom: client.CustomObjectsApi, ref: TargetRef) -> list[dict[str, Any]]:
    found = custom.get_namespaced_custom_object(ISTIO, ISTIO_VERSION, ref.namespace, "virtualservices", ref.name)
    assert isinstance(found, dict)
    return list(found["spec"]["http"])


def test_set_weight_writes_the_managed_route_and_leaves_the_other_untouched(
    kube: KubernetesApi, custom: client.CustomObjectsApi, reviews: TargetRef
) -> None:
    state = IstioRouter(kube).set_weight(reviews, SetTraffic(stable=95, canary=5))
    assert state.pinned("v1", "v2") == {"v1": 95, "v2": 5}
    other, managed = _http(custom, reviews)
    assert other == OTHER_ROUTE
    assert [(d["destination"]["subset"], d["weight"]) for d in managed["route"]] == [("v1", 95), ("v2", 5)]
    assert IstioRouter(kube).verify(reviews, RoutePlan(SetTraffic(95, 5)))


def test_an_unnamed_route_is_found_by_its_two_subsets(
    kube: KubernetesApi, custom: client.CustomObjectsApi, reviews: TargetRef
) -> None:
    unnamed = {k: v for k, v in weighted_route(100, 0).items() if k != "name"}
    custom.patch_namespaced_custom_object(
        ISTIO,
        ISTIO_VERSION,
        reviews.namespace,
        "virtualservices",
        "reviews",
        {"spec": {"http": [OTHER_ROUTE, unnamed]}},
    )
    ref = TargetRef("istio", reviews.namespace, "reviews", "v1", "v2", "", "reviews")
    IstioRouter(kube).set_weight(ref, SetTraffic(50, 50))
    assert [d["weight"] for d in _http(custom, ref)[1]["route"]] == [50, 50]


def test_a_conflict_is_re_read_and_retried(
    kube: KubernetesApi, custom: client.CustomObjectsApi, reviews: TargetRef
) -> None:
    written: list[str] = []

    def guard(state: TargetState) -> None:
        written.append(state.resource_version)
        if len(written) == 1:  # someone bumps the resourceVersion between our read and our write
            custom.patch_namespaced_custom_object(
                ISTIO,
                ISTIO_VERSION,
                reviews.namespace,
                "virtualservices",
                "reviews",
                {"metadata": {"labels": {"x": "y"}}},
            )

    IstioRouter(kube).set_weight(reviews, SetTraffic(90, 10), guard=guard)
    assert len(written) == 2 and written[0] != written[1]
    assert [d["weight"] for d in _http(custom, reviews)[1]["route"]] == [90, 10]


def test_a_foreign_edit_seen_by_the_guard_writes_nothing(
    kube: KubernetesApi, custom: client.CustomObjectsApi, reviews: TargetRef
) -> None:
    custom.patch_namespaced_custom_object(
        ISTIO,
        ISTIO_VERSION,
        reviews.namespace,
        "virtualservices",
        "reviews",
        {"spec": {"http": [OTHER_ROUTE, weighted_route(30, 70)]}},
    )

    def guard(state: TargetState) -> None:
        if state.pinned("v1", "v2") != {"v1": 100, "v2": 0}:
            raise ForeignChange(f"split is {state.pinned('v1', 'v2')}")

    with pytest.raises(ForeignChange):
        IstioRouter(kube).set_weight(reviews, SetTraffic(95, 5), guard=guard)
    assert [d["weight"] for d in _http(custom, reviews)[1]["route"]] == [30, 70]


def test_a_route_that_is_gone_is_permanent(
    kube: KubernetesApi, custom: client.CustomObjectsApi, reviews: TargetRef
) -> None:
    custom.patch_namespaced_custom_object(
        ISTIO, ISTIO_VERSION, reviews.namespace, "virtualservices", "reviews", {"spec": {"http": [OTHER_ROUTE]}}
    )
    with pytest.raises(PermanentError, match="has no route primary"):
        IstioRouter(kube).set_weight(reviews, SetTraffic(95, 5))
    state = IstioTarget(kube).observe([reviews])[reviews]
    assert isinstance(state, TargetState) and state.pinned("v1", "v2") is None  # the pure rules see it changed


def test_a_match_route_goes_before_the_managed_one_and_is_removed_again(
    kube: KubernetesApi, custom: client.CustomObjectsApi, reviews: TargetRef
) -> None:
    plan = RoutePlan(
        SetTraffic(100, 0), (RequestMatch("header", "jason", "end-user"), RequestMatch("cookie", "b", "beta"))
    )
    IstioRouter(kube).set_match_route(reviews, plan)
    other, own, managed = _http(custom, reviews)
    assert own["name"] == own_route_name(reviews)
    assert own["match"] == [
        {"headers": {"end-user": {"exact": "jason"}, "cookie": {"regex": r"^(.*?;\s*)?(beta=b)(;.*)?$"}}}
    ]
    assert own["route"] == [{"destination": {"host": "reviews", "subset": "v2"}}]
    assert other == OTHER_ROUTE and managed["name"] == "primary"
    assert IstioRouter(kube).verify(reviews, plan)
    IstioRouter(kube).set_weight(reviews, SetTraffic(95, 5))  # the next step: weights, no match route
    assert [r["name"] for r in _http(custom, reviews)] == ["ratings", "primary"]
    IstioRouter(kube).set_match_route(reviews, plan)
    IstioRouter(kube).remove_managed_routes(reviews)
    assert [r["name"] for r in _http(custom, reviews)] == ["ratings", "primary"]


def test_registration_finds_the_route_and_host(kube: KubernetesApi, reviews: TargetRef) -> None:
    resolved = IstioTarget(kube).resolve(TargetRequest("istio", reviews.namespace, "reviews", "v1", "v2"))
    assert resolved == reviews


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        pytest.param({"name": "nope"}, "virtual_service", "not found", id="no-virtual-service"),
        pytest.param({"route": "missing"}, "route", "has no http route missing", id="no-such-route"),
        pytest.param({"route": "ratings"}, "route", "does not route to exactly v1 and v2", id="wrong-route"),
        pytest.param({"canary": "v3"}, "route", "routes to exactly v1 and v3", id="route-lacks-subset"),
        pytest.param({"canary": "v1"}, "canary_subset", "must differ from stable_subset", id="same-subset"),
        pytest.param({"rule": "nope"}, "destination_rule", "not found", id="no-destination-rule"),
    ],
)
def test_registration_names_the_field_at_fault(
    kube: KubernetesApi, reviews: TargetRef, spec: dict[str, str], field: str, message: str
) -> None:
    full = {"kind": "istio", "namespace": reviews.namespace, "name": "reviews", "stable": "v1", "canary": "v2", **spec}
    with pytest.raises((ValidationError, TargetNotFound)) as refused:
        IstioTarget(kube).resolve(TargetRequest(**full))
    error = refused.value
    named = error.problems[0].field if isinstance(error, ValidationError) else getattr(error, "field", None)
    assert named == field
    assert message in str(error)


def test_registration_refuses_a_subset_without_available_pods(
    sandbox: Endpoints, kube: KubernetesApi, custom: client.CustomObjectsApi, namespace: str
) -> None:
    create_deployment(sandbox, namespace, deployment("reviews-v1", "v1", "v1"))
    create_deployment(sandbox, namespace, deployment("reviews-v2", "v2", "v2", SANDBOX_NEVER_READY="1"))
    create_istio(custom, namespace, "destinationrules", destination_rule())
    create_istio(custom, namespace, "virtualservices", virtual_service(weighted_route(100, 0)))
    ref = TargetRef("istio", namespace, "reviews", "v1", "v2", "primary", "reviews")
    wait_for(lambda: IstioTarget(kube).version(ref, "v1").is_ready, what="reviews-v1 available")
    with pytest.raises(ValidationError) as refused:
        IstioTarget(kube).resolve(TargetRequest("istio", namespace, "reviews", "v1", "v2"))
    assert refused.value.problems[0].field == "canary_subset"
    assert "selects no Deployment with available pods" in str(refused.value)
    assert not IstioTarget(kube).version(ref, "v2").is_ready


def test_an_unreachable_api_is_transient(reviews: TargetRef) -> None:
    dead = KubernetesApi(client.ApiClient(client.Configuration(host="http://127.0.0.1:9")))
    dead.api_client.configuration.retries = 0
    assert isinstance(IstioTarget(dead).observe([reviews])[reviews], TransientError)


def test_an_edit_of_the_managed_route_s_matches_shows_in_the_state(
    kube: KubernetesApi, custom: client.CustomObjectsApi, reviews: TargetRef
) -> None:
    registered = IstioTarget(kube).resolve(TargetRequest("istio", reviews.namespace, "reviews", "v1", "v2"))
    assert registered.route_match == ""  # the guide's route matches every request
    narrowed = {**weighted_route(100, 0), "match": [{"headers": {"x-team": {"exact": "a"}}}]}
    custom.patch_namespaced_custom_object(
        ISTIO,
        ISTIO_VERSION,
        reviews.namespace,
        "virtualservices",
        "reviews",
        {"spec": {"http": [OTHER_ROUTE, narrowed]}},
    )
    state = IstioTarget(kube).observe([registered])[registered]
    assert isinstance(state, TargetState)
    assert state.route_match == '[{"headers":{"x-team":{"exact":"a"}}}]'
    assert state.pinned("v1", "v2") == {"v1": 100, "v2": 0}  # the weights alone would not tell


def test_many_rollouts_of_one_namespace_are_observed_with_one_list(
    kube: KubernetesApi, custom: client.CustomObjectsApi, namespace: str
) -> None:
    refs = [TargetRef("istio", namespace, f"svc{i}", "v1", "v2", "primary", f"svc{i}") for i in range(7)]
    for ref in refs[:6]:
        create_istio(
            custom, namespace, "virtualservices", virtual_service(weighted_route(90, 10, host=ref.host), host=ref.host)
        )
    asked: list[str] = []
    original = kube.list

    def counting_list(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        asked.append(args[2])
        return original(*args, **kwargs)

    kube.list = counting_list  # type: ignore[method-assign]
    observed = IstioTarget(kube).observe(refs)
    assert asked == ["virtualservices"]
    states = [observed[ref] for ref in refs[:6]]
    assert all(isinstance(s, TargetState) and s.pinned("v1", "v2") == {"v1": 90, "v2": 10} for s in states)
    assert observed[refs[6]] is None  # not there: deleted


def test_registration_refuses_a_subset_istio_would_report_under_another_version(
    sandbox: Endpoints, kube: KubernetesApi, custom: client.CustomObjectsApi, namespace: str
) -> None:
    create_deployment(sandbox, namespace, deployment("reviews-v1", "v1", "v1"))
    rule = destination_rule()
    rule["spec"]["subsets"][1]["labels"] = {"app": "reviews", "track": "canary"}
    create_istio(custom, namespace, "destinationrules", rule)
    create_istio(custom, namespace, "virtualservices", virtual_service(weighted_route(100, 0)))
    ref = TargetRef("istio", namespace, "reviews", "v1", "v2", "primary", "reviews")
    wait_for(lambda: IstioTarget(kube).version(ref, "v1").is_ready, what="reviews-v1 available")
    with pytest.raises(ValidationError) as refused:
        IstioTarget(kube).resolve(TargetRequest("istio", namespace, "reviews", "v1", "v2"))
    assert refused.value.problems[0].field == "canary_subset"
    assert "must select version=v2" in str(refused.value)


def test_a_subset_s_deployment_is_found_by_its_pods_labels_and_its_app(
    sandbox: Endpoints, kube: KubernetesApi, custom: client.CustomObjectsApi, namespace: str
) -> None:
    unlabelled = deployment("reviews-v1", "v1", "v1")
    del unlabelled["metadata"]["labels"]  # a label selector on Deployments would not find it
    create_deployment(sandbox, namespace, unlabelled)
    create_deployment(sandbox, namespace, deployment("reviews-v2", "v2", "v2", SANDBOX_NEVER_READY="1"))
    create_deployment(sandbox, namespace, deployment("ratings-v2", "v2", "ratings", app="ratings"))
    create_istio(custom, namespace, "destinationrules", destination_rule())
    ref = TargetRef("istio", namespace, "reviews", "v1", "v2", "primary", "reviews")
    target = IstioTarget(kube)
    wait_for(lambda: target.version(ref, "v1").is_ready, what="reviews-v1 found by its pods' labels")
    wait_for(lambda: target._available_deployments(namespace, "ratings", {"version": "v2"}), what="ratings-v2")
    assert not target.version(ref, "v2").is_ready  # ratings' v2 pods are no reviews v2


def test_the_state_shows_autocanary_s_match_route_as_written_and_an_edit_of_it(
    kube: KubernetesApi, custom: client.CustomObjectsApi, reviews: TargetRef
) -> None:
    assert IstioTarget(kube).get(reviews.namespace, "reviews").own_route == ""
    plan = RoutePlan(SetTraffic(100, 0), (RequestMatch("header", "jason", "end-user"),))
    written = IstioRouter(kube).set_match_route(reviews, plan)
    assert written.own_route
    observed = IstioTarget(kube).observe([reviews])[reviews]
    assert isinstance(observed, TargetState) and observed.own_route == written.own_route
    other, own, managed = _http(custom, reviews)
    own["match"] = [{"headers": {"end-user": {"exact": "someone-else"}}}]
    custom.patch_namespaced_custom_object(
        ISTIO, ISTIO_VERSION, reviews.namespace, "virtualservices", "reviews", {"spec": {"http": [other, own, managed]}}
    )
    edited = IstioTarget(kube).observe([reviews])[reviews]
    assert isinstance(edited, TargetState) and edited.own_route not in ("", written.own_route)

"""Registering Istio rollouts over HTTP: the API's checks against the sandbox's VirtualService,
DestinationRule and Deployments (real kubernetes client, real Redis), each refusal naming the
request field; and the Knative target given as a `target` object."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapters.factory import kubernetes_backends
from adapters.istio import IstioTarget
from adapters.kubernetes.api import KubernetesApi
from adapters.redis_store import RolloutStore
from api.app import create_app
from api.deps import Dependencies
from api.settings import ApiSettings
from rollouts.ports import TargetRef
from sandbox.cluster import Endpoints
from tests.api.test_api import DEPLOY, TOKENS, VIEW, Queue
from tests.fakes import FakeCluster
from tests.istio import reviews_app
from tests.knative import wait_for


@pytest.fixture
def api(store: RolloutStore, sandbox: Endpoints) -> Iterator[TestClient]:
    backends = kubernetes_backends(KubernetesApi.from_kubeconfig(sandbox.kubeconfig))
    app = create_app(ApiSettings(tokens=TOKENS, max_body_bytes=4096), Dependencies(store, backends, Queue(), {}))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def reviews(sandbox: Endpoints, namespace: str) -> str:
    reviews_app(sandbox, namespace, 100, 0)
    target = IstioTarget(KubernetesApi.from_kubeconfig(sandbox.kubeconfig))
    ref = TargetRef("istio", namespace, "reviews", "v1", "v2", "primary", "reviews")
    wait_for(lambda: target.version(ref, "v1").is_ready and target.version(ref, "v2").is_ready, what="pods")
    return namespace


def _istio(namespace: str, **fields: Any) -> dict[str, Any]:
    return {
        "kind": "istio",
        "namespace": namespace,
        "virtual_service": "reviews",
        "stable_subset": "v1",
        "canary_subset": "v2",
        **fields,
    }


def test_an_istio_rollout_is_registered_with_its_route_host_and_dialect(
    api: TestClient, store: RolloutStore, reviews: str
) -> None:
    created = api.post("/v1/rollouts", json={"target": _istio(reviews), "policy": "fast"}, headers=DEPLOY)
    assert created.status_code == 201, created.text
    shown = api.get(created.headers["Location"], headers=VIEW).json()
    assert shown["target"] == {
        "kind": "istio",
        "namespace": reviews,
        "name": "reviews",
        "stable": "v1",
        "canary": "v2",
        "route": "primary",
        "host": "reviews",
        "tag": None,
        "canary_url": None,
    }
    assert (shown["service"], shown["stable_revision"], shown["canary_revision"]) == ("reviews", "v1", "v2")
    stored = store.get(shown["id"])
    assert stored is not None and stored.policy.dialect == "istio"  # fast names knative-opencensus
    again = api.post("/v1/rollouts", json={"target": _istio(reviews)}, headers=DEPLOY)
    assert again.status_code == 409  # one active rollout per VirtualService


@pytest.mark.parametrize(
    ("fields", "status", "field"),
    [
        pytest.param({"virtual_service": "ratings"}, 404, "target.virtual_service", id="no-virtual-service"),
        pytest.param({"route": "other"}, 422, "target.route", id="no-such-route"),
        pytest.param({"canary_subset": "v3"}, 422, "target.route", id="no-route-to-the-subset"),
        pytest.param({"canary_subset": "v1"}, 422, "target.canary_subset", id="same-subset"),
        pytest.param({"destination_rule": "nope"}, 422, "target.destination_rule", id="no-destination-rule"),
        pytest.param({"canary_subset": "V2"}, 422, "target.canary_subset", id="not-a-name"),
        pytest.param({"subset": "v2"}, 422, "target.subset", id="unknown-field"),
    ],
)
def test_a_bad_istio_target_is_refused_naming_the_field(
    api: TestClient, reviews: str, fields: dict[str, str], status: int, field: str
) -> None:
    refused = api.post("/v1/rollouts", json={"target": _istio(reviews, **fields)}, headers=DEPLOY)
    assert (refused.status_code, refused.json()["field"]) == (status, field), refused.text
    assert api.get("/v1/rollouts", headers=VIEW).json()["items"] == []  # nothing stored


def test_a_target_and_the_old_fields_together_are_refused(api: TestClient, reviews: str) -> None:
    refused = api.post("/v1/rollouts", json={"target": _istio(reviews), "service": "reviews"}, headers=DEPLOY)
    assert (refused.status_code, refused.json()["field"]) == (422, "service")
    missing = api.post("/v1/rollouts", json={"namespace": reviews}, headers=DEPLOY)
    assert (missing.status_code, missing.json()["field"]) == (422, "service")


def test_an_unknown_target_kind_is_refused(api: TestClient, reviews: str) -> None:
    refused = api.post("/v1/rollouts", json={"target": {**_istio(reviews), "kind": "linkerd"}}, headers=DEPLOY)
    assert refused.status_code == 422 and refused.json()["field"] == "target"
    assert "knative" in refused.json()["message"] and "istio" in refused.json()["message"]


def test_a_knative_target_object_registers_as_the_old_fields_do(store: RolloutStore) -> None:
    cluster = FakeCluster()
    cluster.add("shop", "checkout", {"checkout-00001": 0.0, "checkout-00002": 0.0})
    app = create_app(ApiSettings(tokens=TOKENS), Dependencies(store, cluster.backends(), Queue(), {}))
    with TestClient(app) as client:
        target = {"kind": "knative", "namespace": "shop", "service": "checkout"}
        created = client.post("/v1/rollouts", json={"target": target}, headers=DEPLOY)
        assert created.status_code == 201, created.text
        assert created.json()["target"]["kind"] == "knative"
        assert (created.json()["stable_revision"], created.json()["canary_revision"]) == (
            "checkout-00001",
            "checkout-00002",
        )
        gone = client.post("/v1/rollouts", json={"target": {**target, "service": "cart"}}, headers=DEPLOY)
        assert (gone.status_code, gone.json()["field"]) == (404, "target.service")


JASON = {"match": {"headers": {"end-user": {"exact": "jason"}}}}


def test_a_match_step_is_accepted_for_an_istio_target(api: TestClient, store: RolloutStore, reviews: str) -> None:
    body = {"target": _istio(reviews), "policy_overrides": {"steps": [JASON, 25, 50]}}
    created = api.post("/v1/rollouts", json=body, headers=DEPLOY)
    assert created.status_code == 201, created.text
    stored = store.get(created.json()["id"])
    assert stored is not None and stored.policy.describe_step(0) == "requests with header end-user = jason"


@pytest.mark.parametrize(
    ("step", "field", "message"),
    [
        pytest.param({"match": {}}, "policy_overrides.steps[0].match", "needs at least one of", id="empty-match"),
        pytest.param(
            {"match": {"uri": {"prefix": "/a", "exact": "/a"}}},
            "policy_overrides.steps[0].match.uri",
            "exactly one of exact, prefix or regex",
            id="two-kinds",
        ),
        pytest.param(
            {"match": {"headers": {"end-user": {"regex": "("}}}},
            "policy_overrides.steps[0].match.headers.end-user",
            "does not compile",
            id="bad-regex",
        ),
        pytest.param({"match": {"header": {}}}, "policy_overrides.steps[0].match.header", "unknown field", id="typo"),
    ],
)
def test_a_bad_match_step_names_its_field_path(
    api: TestClient, reviews: str, step: dict[str, Any], field: str, message: str
) -> None:
    body = {"target": _istio(reviews), "policy_overrides": {"steps": [step, 50]}}
    refused = api.post("/v1/rollouts", json=body, headers=DEPLOY)
    assert (refused.status_code, refused.json()["field"]) == (422, field), refused.text
    assert message in refused.json()["message"]


def test_a_match_step_after_a_weight_is_refused(api: TestClient, reviews: str) -> None:
    body = {"target": _istio(reviews), "policy_overrides": {"steps": [5, JASON]}}
    refused = api.post("/v1/rollouts", json=body, headers=DEPLOY)
    assert (refused.status_code, refused.json()["field"]) == (422, "policy_overrides.steps")
    assert "a match step comes before the weight steps" in refused.json()["message"]


def test_a_match_step_is_refused_for_a_knative_target(store: RolloutStore) -> None:
    cluster = FakeCluster()
    cluster.add("shop", "checkout", {"checkout-00001": 0.0, "checkout-00002": 0.0})
    app = create_app(ApiSettings(tokens=TOKENS), Dependencies(store, cluster.backends(), Queue(), {}))
    with TestClient(app) as client:
        body = {"namespace": "shop", "service": "checkout", "policy_overrides": {"steps": [JASON, 50]}}
        refused = client.post("/v1/rollouts", json=body, headers=DEPLOY)
        assert (refused.status_code, refused.json()["field"]) == (422, "policy_overrides.steps[0]"), refused.text
        assert "a knative target cannot express" in refused.json()["message"]
        assert client.get("/v1/rollouts", headers=VIEW).json()["items"] == []


def test_a_knative_revision_measured_by_istio_reads_its_canonical_labels(store: RolloutStore) -> None:
    cluster = FakeCluster()
    cluster.add("shop", "checkout", {"checkout-00001": 0.0, "checkout-00002": 0.0})
    app = create_app(ApiSettings(tokens=TOKENS), Dependencies(store, cluster.backends(), Queue(), {}))
    with TestClient(app) as client:
        body = {"namespace": "shop", "service": "checkout", "policy_overrides": {"dialect": "istio"}}
        created = client.post("/v1/rollouts", json=body, headers=DEPLOY)
        assert created.status_code == 201, created.text
        stored = store.get(created.json()["id"])
        assert stored is not None and stored.policy.dialect == "istio-knative"

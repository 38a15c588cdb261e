"""Istio canaries end to end: the API, two worker processes and the scheduler as real processes,
the sandbox's VirtualService, DestinationRule and Deployments over HTTP, its mesh serving load,
and a real Prometheus holding the Istio series. Registered with the CLI, as a pipeline would."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from rollouts import Phase
from sandbox.cluster import Endpoints
from sandbox.processes import AUTOCANARY, BackgroundLoad
from tests.e2e.stack import Stack, running
from tests.istio import ISTIO, ISTIO_VERSION, api_client, reviews_app
from tests.knative import wait_for

pytestmark = pytest.mark.slow

DEPLOYER, OPERATOR = "istio-deploy-secret", "istio-operate-secret"
OVERRIDES = {
    "steps": "[20,50]",
    "step_min_duration": "3s",
    "interval": "1s",
    "min_requests_per_step": "10",
    "progress_deadline": "30s",
    "on_insufficient_traffic": "hold",
    "alpha_errors": "0.001",
    "alpha_latency": "0.001",
}
OTHER_ROUTE = {
    "name": "ratings",
    "match": [{"uri": {"prefix": "/ratings"}}],
    "route": [{"destination": {"host": "ratings"}}],
}


class IstioStack(Stack):
    def create(self, namespace: str, *extra: str, **overrides: str) -> str:
        settings = [f"--set={key}={value}" for key, value in {**OVERRIDES, **overrides}.items()]
        subsets = ["--stable-subset", "v1", "--canary-subset", "v2"]
        done = subprocess.run(  # noqa: S603 (our own command line)
            [AUTOCANARY, "rollout", "create", namespace, "--istio", "reviews", *subsets, *settings, *extra],
            env={"AUTOCANARY_SERVER": self.api, "AUTOCANARY_TOKEN": DEPLOYER, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def http(self, namespace: str) -> list[dict[str, Any]]:
        custom = client.CustomObjectsApi(api_client(self.endpoints))
        found = custom.get_namespaced_custom_object(ISTIO, ISTIO_VERSION, namespace, "virtualservices", "reviews")
        assert isinstance(found, dict)
        return list(found["spec"]["http"])

    def weights(self, namespace: str) -> dict[str, int]:
        managed = next(r for r in self.http(namespace) if r.get("name") == "primary")
        return {d["destination"]["subset"]: d["weight"] for d in managed["route"]}


@pytest.fixture(scope="module")
def stack(sandbox: Endpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IstioStack]:
    tokens = f"pipeline:deployer:{DEPLOYER},on-call:operator:{OPERATOR}"
    with running(sandbox, tmp_path_factory.mktemp("istio-stack"), tokens, workers=2) as (api, store):
        yield IstioStack(sandbox, api, store)


def _app(stack: IstioStack, namespace: str, headers: dict[str, str] | None = None, **canary_env: str) -> BackgroundLoad:
    """The guide's objects at v1 100 % (an unrelated route in front), then load on the host."""
    reviews_app(stack.endpoints, namespace, 100, 0, **canary_env)
    custom = client.CustomObjectsApi(api_client(stack.endpoints))
    routes = [OTHER_ROUTE, *stack.http(namespace)]
    custom.patch_namespaced_custom_object(
        ISTIO, ISTIO_VERSION, namespace, "virtualservices", "reviews", {"spec": {"http": routes}}
    )
    apps = client.AppsV1Api(api_client(stack.endpoints))

    def available() -> bool:
        return all(
            (
                (
                    apps.read_namespaced_deployment(name, namespace).status or client.V1DeploymentStatus()
                ).available_replicas
                or 0
            )
            > 0
            for name in ("reviews-v1", "reviews-v2")
        )

    wait_for(available, what="both Deployments available")
    return BackgroundLoad(stack.endpoints.gateway, [f"reviews.{namespace}"], rate=25, headers=headers)


def test_an_istio_canary_is_promoted_step_by_step(stack: IstioStack, namespace: str) -> None:
    load = _app(stack, namespace)
    try:
        rollout = stack.wait_terminal(stack.create(namespace), timeout=120)
    finally:
        load.stop()
    assert rollout.phase is Phase.SUCCEEDED, rollout.reason
    assert stack.weights(namespace) == {"v1": 0, "v2": 100}
    assert stack.http(namespace)[0] == OTHER_ROUTE  # the route autocanary does not manage is as it was
    kinds = [e.kind for e in stack.store.events(rollout.id)]
    assert kinds.count("step_advanced") == 2 and "promoted" in kinds
    verdicts = [e for e in stack.store.events(rollout.id) if e.kind == "verdict" and e.data.get("canary_requests")]
    assert verdicts, "judged on Istio's series from Prometheus"


def test_a_failing_istio_canary_is_rolled_back_with_the_verdict(stack: IstioStack, namespace: str) -> None:
    load = _app(stack, namespace, SANDBOX_ERROR_RATE="0.9")
    try:
        rollout = stack.wait_terminal(stack.create(namespace), timeout=120)
    finally:
        load.stop()
    assert rollout.phase is Phase.ROLLED_BACK
    assert "5xx" in rollout.reason
    assert stack.weights(namespace) == {"v1": 100, "v2": 0}


def test_an_out_of_band_edit_of_the_virtual_service_ends_superseded(stack: IstioStack, namespace: str) -> None:
    load = _app(stack, namespace)
    try:
        rollout_id = stack.create(namespace, step_min_duration="1h")
        wait_for(lambda: stack.weights(namespace) == {"v1": 80, "v2": 20}, timeout=60, what="step 1 at 20 %")
        routes = stack.http(namespace)
        routes[1]["route"][0]["weight"], routes[1]["route"][1]["weight"] = 50, 50
        client.CustomObjectsApi(api_client(stack.endpoints)).patch_namespaced_custom_object(
            ISTIO, ISTIO_VERSION, namespace, "virtualservices", "reviews", {"spec": {"http": routes}}
        )
        rollout = stack.wait_terminal(rollout_id, timeout=60)
    finally:
        load.stop()
    assert rollout.phase is Phase.SUPERSEDED
    assert "50 % canary by someone else" in rollout.reason
    assert stack.weights(namespace) == {"v1": 50, "v2": 50}


def test_a_header_step_first_then_weights(stack: IstioStack, namespace: str) -> None:
    load = _app(stack, namespace)
    jason = BackgroundLoad(stack.endpoints.gateway, [f"reviews.{namespace}"], rate=8, headers={"end-user": "jason"})
    try:
        steps = '[{"match": {"headers": {"end-user": {"exact": "jason"}}}}, 50]'
        rollout_id = stack.create(namespace, steps=steps)

        def own_route() -> dict[str, Any] | None:
            return next((r for r in stack.http(namespace) if r.get("name") == "autocanary-reviews-v2"), None)

        route = wait_for(own_route, timeout=60, what="the match route")
        assert route["match"] == [{"headers": {"end-user": {"exact": "jason"}}}]
        assert route["route"] == [{"destination": {"host": "reviews", "subset": "v2"}}]
        assert [r.get("name") for r in stack.http(namespace)] == ["ratings", "autocanary-reviews-v2", "primary"]
        assert stack.weights(namespace) == {"v1": 100, "v2": 0}  # everyone else stays on v1
        rollout = stack.wait_terminal(rollout_id, timeout=120)
    finally:
        load.stop()
        jason.stop()
    assert rollout.phase is Phase.SUCCEEDED, rollout.reason
    assert [r.get("name") for r in stack.http(namespace)] == ["ratings", "primary"]  # the match route is gone
    assert stack.weights(namespace) == {"v1": 0, "v2": 100}
    served = {r.by_body.get("Hello reviews v2!", 0) for r in jason.results}
    assert served and min(served) > 0  # jason's requests reached v2 during the match step


def test_an_edit_of_autocanary_s_match_route_ends_superseded(stack: IstioStack, namespace: str) -> None:
    load = _app(stack, namespace)
    try:
        steps = '[{"match": {"headers": {"end-user": {"exact": "jason"}}}}, 50]'
        rollout_id = stack.create(namespace, steps=steps, step_min_duration="1h")

        def confirmed() -> bool:
            rollout = stack.store.get(rollout_id)
            return rollout is not None and rollout.match_applied

        wait_for(confirmed, timeout=60, what="the match route confirmed")
        routes = stack.http(namespace)
        own = next(r for r in routes if r.get("name") == "autocanary-reviews-v2")
        own["match"] = [{"headers": {"end-user": {"exact": "everyone"}}}]
        client.CustomObjectsApi(api_client(stack.endpoints)).patch_namespaced_custom_object(
            ISTIO, ISTIO_VERSION, namespace, "virtualservices", "reviews", {"spec": {"http": routes}}
        )
        rollout = stack.wait_terminal(rollout_id, timeout=60)
    finally:
        load.stop()
    assert rollout.phase is Phase.SUPERSEDED
    assert "autocanary's match route was edited by someone else" in rollout.reason
    edited = next(r for r in stack.http(namespace) if r.get("name") == "autocanary-reviews-v2")
    assert edited["match"] == [{"headers": {"end-user": {"exact": "everyone"}}}]  # left as the operator set it

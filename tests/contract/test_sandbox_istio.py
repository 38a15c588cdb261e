"""The Istio canary guide by hand against the sandbox: two Deployments, a DestinationRule, a
VirtualService split by weight, then forwarding by header, cookie and URI, through the real
kubernetes client and real HTTP to the sandbox's gateway; and what istiod and the API server
refuse."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from typing import Any

import httpx
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from typer.testing import CliRunner

from cli.main import app as cli
from sandbox.cluster import Endpoints
from tests.istio import (
    ISTIO,
    ISTIO_VERSION,
    api_client,
    create_deployment,
    create_istio,
    deployment,
    reviews_app,
    virtual_service,
    weighted_route,
)
from tests.knative import wait_for


def _versions(endpoints: Endpoints, host: str, count: int, **request: Any) -> Counter[str]:
    seen: Counter[str] = Counter()
    with httpx.Client(base_url=endpoints.gateway, headers={"Host": host}, timeout=5) as http:
        for _ in range(count):
            answer = http.get(request.get("path", "/"), headers=request.get("headers"))
            assert answer.status_code == 200, answer.text
            seen[answer.text.strip()] += 1
    return seen


def _available(endpoints: Endpoints, namespace: str, *names: str) -> None:
    apps = client.AppsV1Api(api_client(endpoints))

    def available(name: str) -> bool:
        status = apps.read_namespaced_deployment(name, namespace).status
        return status is not None and (status.available_replicas or 0) > 0

    def all_available() -> bool:
        return all(available(name) for name in names)

    wait_for(all_available, what=f"deployments {names} available")


def _set_routes(endpoints: Endpoints, namespace: str, *routes: dict[str, Any]) -> None:
    custom = client.CustomObjectsApi(api_client(endpoints))
    custom.patch_namespaced_custom_object(
        ISTIO, ISTIO_VERSION, namespace, "virtualservices", "reviews", {"spec": {"http": list(routes)}}
    )


def _to(subset: str) -> list[dict[str, Any]]:
    return [{"destination": {"host": "reviews", "subset": subset}}]


@pytest.fixture
def reviews(sandbox: Endpoints, namespace: str) -> str:
    reviews_app(sandbox, namespace, 50, 50)
    _available(sandbox, namespace, "reviews-v1", "reviews-v2")
    return f"reviews.{namespace}"


def test_a_fifty_fifty_split_serves_both_versions_within_binomial_noise(sandbox: Endpoints, reviews: str) -> None:
    seen = _versions(sandbox, reviews, 200)
    # 200 fair coin flips: 100 +- 7 (one standard deviation); 60 is more than five away.
    assert set(seen) == {"Hello reviews v1!", "Hello reviews v2!"}
    assert 60 <= seen["Hello reviews v2!"] <= 140, seen


@pytest.mark.parametrize(
    ("match", "matching", "other"),
    [
        pytest.param(
            {"headers": {"end-user": {"exact": "jason"}}},
            {"headers": {"end-user": "jason"}},
            {"headers": {"end-user": "json"}},
            id="header-exact",
        ),
        pytest.param(
            {"headers": {"cookie": {"regex": r"^(.*?;\s*)?(user=jason)(;.*)?$"}}},
            {"headers": {"Cookie": "theme=dark; user=jason"}},
            {"headers": {"Cookie": "user=jasonx"}},
            id="cookie-regex",
        ),
        pytest.param({"uri": {"prefix": "/v2"}}, {"path": "/v2/reviews"}, {"path": "/reviews"}, id="uri-prefix"),
    ],
)
def test_a_match_route_sends_only_matching_requests_to_v2(
    sandbox: Endpoints, namespace: str, reviews: str, match: dict[str, Any], matching: Any, other: Any
) -> None:
    _set_routes(sandbox, namespace, {"name": "canary", "match": [match], "route": _to("v2")}, weighted_route(100, 0))
    assert _versions(sandbox, reviews, 30, **matching) == {"Hello reviews v2!": 30}
    assert _versions(sandbox, reviews, 30, **other) == {"Hello reviews v1!": 30}


def test_istio_series_count_what_the_mesh_served(sandbox: Endpoints, namespace: str, reviews: str) -> None:
    _set_routes(sandbox, namespace, weighted_route(0, 100))
    _versions(sandbox, reviews, 25)
    metrics = httpx.get(sandbox.metrics, timeout=5).text
    wanted = f'destination_workload="reviews-v2",destination_workload_namespace="{namespace}",destination_version="v2"'
    lines = [line for line in metrics.splitlines() if line.startswith("istio_requests_total{") and wanted in line]
    assert lines and all('reporter="destination"' in line and 'response_code="200"' in line for line in lines)
    assert sum(float(line.rsplit(" ", 1)[1]) for line in lines) == 25


def test_istiod_refuses_weights_that_send_nothing_anywhere(sandbox: Endpoints, namespace: str) -> None:
    custom = client.CustomObjectsApi(api_client(sandbox))
    with pytest.raises(ApiException) as refused:
        create_istio(custom, namespace, "virtualservices", virtual_service(weighted_route(0, 0)))
    assert refused.value.status == 400
    message = json.loads(refused.value.body or "{}")["message"]
    assert message == (
        'admission webhook "validation.istio.io" denied the request: configuration is invalid:'
        " total destination weight = 0"
    )
    with pytest.raises(ApiException):
        custom.get_namespaced_custom_object(ISTIO, ISTIO_VERSION, namespace, "virtualservices", "reviews")


def test_a_deployment_whose_selector_misses_its_pods_is_invalid(sandbox: Endpoints, namespace: str) -> None:
    body = deployment("reviews-v1", "v1", "v1")
    body["spec"]["selector"]["matchLabels"]["version"] = "v9"
    with pytest.raises(ApiException) as refused:
        create_deployment(sandbox, namespace, body)
    assert refused.value.status == 422
    assert "`selector` does not match template `labels`" in json.loads(refused.value.body or "{}")["message"]


def test_a_subset_without_available_pods_is_a_503(sandbox: Endpoints, namespace: str) -> None:
    create_deployment(sandbox, namespace, deployment("reviews-v1", "v1", "v1", SANDBOX_NEVER_READY="1"))
    custom = client.CustomObjectsApi(api_client(sandbox))
    create_istio(custom, namespace, "virtualservices", virtual_service({"route": _to("v1")}))
    answer = httpx.get(sandbox.gateway, headers={"Host": f"reviews.{namespace}"}, timeout=5)
    assert answer.status_code == 503
    assert "no subset v1" in answer.text


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is installed by make bootstrap")
def test_kubectl_lists_virtual_services_and_deployments(sandbox: Endpoints, namespace: str, reviews: str) -> None:
    def kubectl(*arguments: str) -> str:
        done = subprocess.run(  # noqa: S603 (our own command line)
            ["kubectl", "--kubeconfig", sandbox.kubeconfig, "-n", namespace, *arguments],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "reviews" in kubectl("get", "virtualservices")
    assert "reviews" in kubectl("get", "vs", "reviews", "-o", "name")
    listed = kubectl("get", "deployments")
    assert "reviews-v1" in listed and "reviews-v2" in listed
    assert "reviews" in kubectl("get", "destinationrules")


def test_sandbox_load_sends_its_headers_so_a_match_route_takes_them(
    sandbox: Endpoints, namespace: str, reviews: str
) -> None:
    _set_routes(
        sandbox,
        namespace,
        {"name": "canary", "match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": _to("v2")},
        weighted_route(100, 0),
    )
    arguments = ["sandbox", "load", reviews, "--gateway", sandbox.gateway, "--rate", "20", "--duration", "1"]
    jason = CliRunner().invoke(cli, [*arguments, "--header", "end-user: jason"])
    assert jason.exit_code == 0, jason.output
    assert "Hello reviews v2!" in jason.output and "Hello reviews v1!" not in jason.output
    others = CliRunner().invoke(cli, arguments)
    assert "Hello reviews v1!" in others.output and "Hello reviews v2!" not in others.output
    bad = CliRunner().invoke(cli, [*arguments, "--header", "no-colon"])
    assert bad.exit_code == 2 and "want NAME:VALUE" in bad.output

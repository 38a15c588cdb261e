"""The KubeSphere/Istio canary guide's objects, for tests that act on the sandbox as a user would:
two Deployments `reviews-v1` and `reviews-v2`, a DestinationRule with subsets `v1` and `v2` by the
pods' `version` label, and a VirtualService for host `reviews`."""

from __future__ import annotations

from typing import Any, cast

from kubernetes import client, config

from sandbox.cluster import Endpoints

ISTIO, ISTIO_VERSION = "networking.istio.io", "v1"


def api_client(endpoints: Endpoints) -> client.ApiClient:
    made: client.ApiClient = config.new_client_from_config(config_file=endpoints.kubeconfig)  # type: ignore[no-untyped-call]
    return made


def deployment(name: str, version: str, target: str, app: str = "reviews", **env: str) -> dict[str, Any]:
    labels = {"app": app, "version": version}
    variables = [{"name": "TARGET", "value": target}] + [{"name": k, "value": v} for k, v in env.items()]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {"containers": [{"name": app, "image": f"example/{app}:{version}", "env": variables}]},
            },
        },
    }


def destination_rule(host: str = "reviews", subsets: tuple[str, ...] = ("v1", "v2")) -> dict[str, Any]:
    return {
        "apiVersion": f"{ISTIO}/{ISTIO_VERSION}",
        "kind": "DestinationRule",
        "metadata": {"name": host},
        "spec": {"host": host, "subsets": [{"name": s, "labels": {"version": s}} for s in subsets]},
    }


def weighted_route(v1: int, v2: int, host: str = "reviews", name: str = "primary") -> dict[str, Any]:
    return {
        "name": name,
        "route": [
            {"destination": {"host": host, "subset": "v1"}, "weight": v1},
            {"destination": {"host": host, "subset": "v2"}, "weight": v2},
        ],
    }


def virtual_service(*routes: dict[str, Any], host: str = "reviews") -> dict[str, Any]:
    return {
        "apiVersion": f"{ISTIO}/{ISTIO_VERSION}",
        "kind": "VirtualService",
        "metadata": {"name": host},
        "spec": {"hosts": [host], "http": list(routes)},
    }


def create_istio(api: client.CustomObjectsApi, namespace: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
    created = api.create_namespaced_custom_object(ISTIO, ISTIO_VERSION, namespace, plural, body)
    assert isinstance(created, dict)
    return created


def create_deployment(endpoints: Endpoints, namespace: str, body: dict[str, Any]) -> None:
    """Through the client's typed AppsV1Api, which sends a plain dict as it is."""
    client.AppsV1Api(api_client(endpoints)).create_namespaced_deployment(namespace, cast(Any, body))


def reviews_app(endpoints: Endpoints, namespace: str, v1: int = 50, v2: int = 50, **canary_env: str) -> None:
    """The guide's setup: both Deployments, the DestinationRule, a VirtualService at v1/v2."""
    create_deployment(endpoints, namespace, deployment("reviews-v1", "v1", "reviews v1"))
    create_deployment(endpoints, namespace, deployment("reviews-v2", "v2", "reviews v2", **canary_env))
    custom = client.CustomObjectsApi(api_client(endpoints))
    create_istio(custom, namespace, "destinationrules", destination_rule())
    create_istio(custom, namespace, "virtualservices", virtual_service(weighted_route(v1, v2)))

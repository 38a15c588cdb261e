"""A Gateway API canary's objects, for tests that act on the sandbox as a user would: Deployments
`shop-v1` and `shop-v2` (pods labelled `app: shop, version: v1|v2`), a core Service for each
(`shop-stable`, `shop-canary`, selecting by those labels) and an HTTPRoute `shop` for host
`shop.{namespace}.gateway.example` whose rule `main` splits between them."""

from __future__ import annotations

from typing import Any, cast

from kubernetes import client

from sandbox.cluster import Endpoints
from tests.istio import api_client, create_deployment, deployment

GATEWAY, GATEWAY_VERSION = "gateway.networking.k8s.io", "v1"


def host(namespace: str) -> str:
    """The shop's hostname in one test's namespace (hostnames are shared by every route of a gateway)."""
    return f"shop.{namespace}.gateway.example"


def service(name: str, version: str, app: str = "shop") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": app, "version": version}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def backend(name: str, weight: int) -> dict[str, Any]:
    return {"name": name, "port": 80, "weight": weight}


def http_route(*rules: dict[str, Any], name: str = "shop", hostnames: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "apiVersion": f"{GATEWAY}/{GATEWAY_VERSION}",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {"parentRefs": [{"name": "sandbox-gateway"}], "hostnames": list(hostnames), "rules": list(rules)},
    }


def split_rule(stable: int, canary: int, name: str | None = "main") -> dict[str, Any]:
    rule: dict[str, Any] = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
        "backendRefs": [backend("shop-stable", stable), backend("shop-canary", canary)],
    }
    return {"name": name, **rule} if name else rule


def create_route(api: client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    created = api.create_namespaced_custom_object(GATEWAY, GATEWAY_VERSION, namespace, "httproutes", body)
    assert isinstance(created, dict)
    return created


def create_service(endpoints: Endpoints, namespace: str, body: dict[str, Any]) -> None:
    client.CoreV1Api(api_client(endpoints)).create_namespaced_service(namespace, cast(Any, body))


def shop_app(endpoints: Endpoints, namespace: str, *rules: dict[str, Any], **canary_env: str) -> None:
    """Both Deployments, both Services, and the HTTPRoute (default: rule `main` at 100/0)."""
    create_deployment(endpoints, namespace, deployment("shop-v1", "v1", "shop v1", app="shop"))
    create_deployment(endpoints, namespace, deployment("shop-v2", "v2", "shop v2", app="shop", **canary_env))
    create_service(endpoints, namespace, service("shop-stable", "v1"))
    create_service(endpoints, namespace, service("shop-canary", "v2"))
    custom = client.CustomObjectsApi(api_client(endpoints))
    create_route(custom, namespace, http_route(*(rules or (split_rule(100, 0),)), hostnames=(host(namespace),)))

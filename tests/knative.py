"""Helpers for tests that act on the sandbox as a user would, through the real kubernetes client."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client, config

from adapters.factory import kubernetes_backends
from adapters.kubernetes.api import KubernetesApi
from rollouts.ports import KindBackends, TargetRef
from sandbox.cluster import Endpoints

GROUP, VERSION = "serving.knative.dev", "v1"
T = TypeVar("T")


def custom_objects(endpoints: Endpoints) -> client.CustomObjectsApi:
    api_client = config.new_client_from_config(config_file=endpoints.kubeconfig)  # type: ignore[no-untyped-call]
    return client.CustomObjectsApi(api_client)


def knative_backends(endpoints: Endpoints) -> KindBackends:
    """The product's Knative target, router and event recorder, connected to the sandbox."""
    return kubernetes_backends(KubernetesApi.from_kubeconfig(endpoints.kubeconfig)).of("knative")


def pinned_pair(namespace: str, service: str, stable: str, canary: str) -> TargetRef:
    return TargetRef("knative", namespace, service, stable, canary)


def hello_service(name: str, target: str, **env: str) -> dict[str, Any]:
    variables = [{"name": "TARGET", "value": target}] + [{"name": k, "value": v} for k, v in env.items()]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [{"image": "ghcr.io/knative/helloworld-go", "env": variables}]}}},
    }


def create(api: client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, "services", body)
    assert isinstance(created, dict)
    return created


def get(api: client.CustomObjectsApi, namespace: str, plural: str, name: str) -> dict[str, Any]:
    found = api.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    assert isinstance(found, dict)
    return found


def new_revision(
    api: client.CustomObjectsApi, namespace: str, name: str, target: str, pin: str | None = None, **env: str
) -> None:
    """Change the template (a new revision); with `pin`, keep 100 % on that revision, as the guides do."""
    service = get(api, namespace, "services", name)
    service["spec"]["template"] = hello_service(name, target, **env)["spec"]["template"]
    if pin:
        service["spec"]["traffic"] = [
            {"revisionName": pin, "percent": 100},
            {"latestRevision": True, "percent": 0, "tag": "latest"},
        ]
    api.replace_namespaced_custom_object(GROUP, VERSION, namespace, "services", name, service)


def ready(obj: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in (obj.get("status") or {}).get("conditions", [])
    )


def wait_for(check: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def service_ready(api: client.CustomObjectsApi, namespace: str, name: str, revision: str) -> dict[str, Any]:
    """Wait until `revision` is the latest ready one and the service is Ready; return the service."""

    def check() -> dict[str, Any] | None:
        found = get(api, namespace, "services", name)
        status = found.get("status") or {}
        settled = status.get("observedGeneration") == found["metadata"]["generation"]
        return found if settled and status.get("latestReadyRevisionName") == revision and ready(found) else None

    return wait_for(check, what=f"{namespace}/{name} ready with {revision}")

"""`KubernetesApi`: the one place autocanary talks to the Kubernetes API (the only `kubernetes` import).

Every target, router and the event recorder go through it, so the rules live once:

- reads and the one write function, `patch`: a JSON merge patch (the only patch type custom
  resources accept besides JSON patch) that carries `metadata.resourceVersion` for optimistic
  concurrency; a stale version is a `Conflict` for the caller to re-read and retry;
- errors sorted for the caller: what cannot succeed by retrying (400 admission denial, 404,
  415, 422, 401/403) is a `PermanentError` carrying the API server's message; connection errors,
  timeouts, 429 and 5xx are `TransientError`s.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import cached_property
from typing import Any, TypeVar

import urllib3.exceptions
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from rollouts.errors import PermanentError, TransientError

T = TypeVar("T")


class Conflict(Exception):
    """A 409 Conflict: someone else wrote first; re-read and try again."""


class KubernetesApi:
    def __init__(self, api_client: client.ApiClient, *, request_timeout: float = 5.0) -> None:
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.request_timeout = request_timeout

    @cached_property
    def core(self) -> client.CoreV1Api:
        """The core/v1 API, for Events only: built on first use, because the client imports its
        module lazily and that import costs about a second (paid by the notification relay, not by
        the first abort a worker carries out)."""
        return client.CoreV1Api(self.api_client)

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None = None, context: str | None = None) -> KubernetesApi:
        """Standard loading: in-cluster when running in a pod without a kubeconfig, else the kubeconfig."""
        configuration = client.Configuration()
        if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        configuration.retries = 1  # our own retries decide; do not hide an outage behind urllib3's
        configuration.connection_pool_maxsize = 32  # a batch's writes go out concurrently
        return cls(client.ApiClient(configuration))

    def ready(self) -> bool:
        """The API server answers (for readiness probes)."""
        try:
            self.call("read the API server version", lambda: client.VersionApi(self.api_client).get_code())
        except (TransientError, PermanentError):
            return False
        return True

    def get(self, group: str, version: str, plural: str, namespace: str, name: str) -> dict[str, Any]:
        found = self.call(
            f"get {plural[:-1]} {namespace}/{name}",
            lambda: self.custom.get_namespaced_custom_object(
                group, version, namespace, plural, name, _request_timeout=self.request_timeout
            ),
        )
        if not isinstance(found, dict):
            raise TransientError(f"get {plural[:-1]} {namespace}/{name}: unexpected answer {type(found).__name__}")
        return found

    def get_core(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        """A core/v1 object (a Service) as a dict, through the client's own request path; not
        `CoreV1Api`, whose lazy import costs about a second (see `core`)."""

        def read() -> object:
            request = self.api_client.param_serialize(
                "GET",
                f"/api/v1/namespaces/{{namespace}}/{plural}/{{name}}",
                path_params={"namespace": namespace, "name": name},
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
            )
            answer = self.api_client.call_api(*request, _request_timeout=self.request_timeout)
            answer.read()  # type: ignore[no-untyped-call]
            return self.api_client.response_deserialize(answer, {"200": "object"}).data

        found = self.call(f"get {plural[:-1]} {namespace}/{name}", read)
        if not isinstance(found, dict):
            raise TransientError(f"get {plural[:-1]} {namespace}/{name}: unexpected answer {type(found).__name__}")
        return found

    def list(self, group: str, version: str, plural: str, namespace: str) -> list[dict[str, Any]]:
        """Objects of any group (`apps` too: its path has the custom objects' shape), as dicts."""
        found = self.call(
            f"list {plural} in {namespace}",
            lambda: self.custom.list_namespaced_custom_object(
                group, version, namespace, plural, _request_timeout=self.request_timeout
            ),
        )
        items = found.get("items", []) if isinstance(found, dict) else []
        return [item for item in items if isinstance(item, dict)]

    def patch(
        self, group: str, version: str, plural: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """The one write: a JSON merge patch (the client's default for custom objects).

        Put `metadata.resourceVersion` in `patch` to make it conditional; a stale one raises
        `Conflict`.
        """
        written = self.call(
            f"patch {plural[:-1]} {namespace}/{name}",
            lambda: self.custom.patch_namespaced_custom_object(
                group, version, namespace, plural, name, patch, _request_timeout=self.request_timeout
            ),
        )
        if not isinstance(written, dict):
            raise TransientError(f"patch {namespace}/{name}: unexpected answer {type(written).__name__}")
        return written

    def create_event(self, namespace: str, event: client.CoreV1Event, what: str) -> None:
        self.call(
            what,
            lambda: self.core.create_namespaced_event(namespace, event, _request_timeout=self.request_timeout),
        )

    def call(self, what: str, request: Callable[[], T]) -> T:
        try:
            return request()
        except ApiException as exc:
            message = _server_message(exc)
            if exc.status == 409 and _reason(exc) == "Conflict":
                raise Conflict(message) from exc
            if exc.status in (400, 401, 403, 404, 405, 409, 415, 422):
                raise PermanentError(f"{what}: {exc.status} {message}") from exc
            raise TransientError(f"{what}: {exc.status or 'no answer'} {message}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransientError(f"{what}: Kubernetes API unreachable: {exc}") from exc


def _server_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return str(exc.reason or exc.body or "").strip()
    return str(body.get("message") or exc.reason or "") if isinstance(body, dict) else str(exc.reason)


def _reason(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return ""
    return str(body.get("reason", "")) if isinstance(body, dict) else ""


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    """A status condition of an object by type ({} when it has none)."""
    for found in (obj.get("status") or {}).get("conditions") or []:
        if found.get("type") == kind:
            return dict(found)
    return {}

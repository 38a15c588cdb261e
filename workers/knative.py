"""`KnativeRouter`: the one place autocanary writes to Kubernetes (and the only `kubernetes` import).

Every write follows the rules of "Knative facts" in design.md: both revisions pinned by name
(never `latestRevision: true`, which would float to any newer revision), a JSON merge patch
(which replaces the whole `spec.traffic` list) carrying `metadata.resourceVersion` for
optimistic concurrency, a bounded retry with backoff when another writer got there first (409),
and a bounded read-back until the controller has observed the new generation.

Errors are sorted for the caller: what cannot succeed by retrying (400 admission denial, 404,
415, 422, 401/403) is a `PermanentError` carrying the API server's message; connection errors,
timeouts, 429 and 5xx are `TransientError`s.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import urllib3.exceptions
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from rollouts.actions import SetTraffic
from rollouts.errors import PermanentError, TransientError
from rollouts.ports import RevisionState, ServiceState, TrafficTarget, WriteGuard

GROUP, VERSION = "serving.knative.dev", "v1"
EVENT_SOURCE = "autocanary"
T = TypeVar("T")


class _Conflict(Exception):
    """A 409 Conflict: someone else wrote first; re-read and try again."""


class KnativeRouter:
    def __init__(
        self,
        api: client.CustomObjectsApi,
        *,
        conflict_retries: int = 5,
        backoff: float = 0.05,
        settle_timeout: float = 10.0,
        poll_interval: float = 0.05,
        request_timeout: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.conflict_retries = conflict_retries
        self.backoff = backoff
        self.settle_timeout = settle_timeout
        self.poll_interval = poll_interval
        self.request_timeout = request_timeout
        self._sleep = sleep
        self._monotonic = monotonic
        self._service_uids: dict[tuple[str, str], str] = {}

    @classmethod
    def from_kubeconfig(
        cls, kubeconfig: str | None = None, context: str | None = None, **options: Any
    ) -> KnativeRouter:
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
        return cls(client.CustomObjectsApi(client.ApiClient(configuration)), **options)

    # --- reads ---------------------------------------------------------------------------------

    def ready(self) -> bool:
        """The API server answers (for readiness probes)."""
        try:
            self._call("read the API server version", lambda: client.VersionApi(self.api.api_client).get_code())
        except (TransientError, PermanentError):
            return False
        return True

    def get_service(self, namespace: str, service: str) -> ServiceState:
        return _service_state(self._get("services", namespace, service))

    def current_split(self, namespace: str, service: str) -> dict[str, int]:
        return self.get_service(namespace, service).split

    def list_services(self, namespace: str) -> dict[str, ServiceState]:
        """Every Service of a namespace in one request (the runner batches its reads this way)."""
        found = self._call(
            f"list services in {namespace}",
            lambda: self.api.list_namespaced_custom_object(
                GROUP, VERSION, namespace, "services", _request_timeout=self.request_timeout
            ),
        )
        items = found.get("items", []) if isinstance(found, dict) else []
        return {item["metadata"]["name"]: _service_state(item) for item in items}

    def get_revision(self, namespace: str, revision: str) -> RevisionState:
        found = self._get("revisions", namespace, revision)
        ready = _condition(found, "Ready")
        return RevisionState(
            namespace=namespace,
            name=revision,
            ready=str(ready.get("status", "Unknown")),
            reason=str(ready.get("reason", "")),
            message=str(ready.get("message", "")),
        )

    # --- the write -----------------------------------------------------------------------------

    def set_split(
        self,
        namespace: str,
        service: str,
        stable: str,
        canary: str,
        weights: SetTraffic,
        guard: WriteGuard | None = None,
    ) -> ServiceState:
        """Pin `stable` and `canary` with these weights; return the Service once the controller saw it.

        `guard` sees the Service after each read, before the write conditioned on that read's
        resourceVersion. Whatever lands between the read and the write (a newer owner's split,
        an operator's edit) makes the write meet a 409, and the re-read goes through the guard
        again: a worker that lost its fencing token stops with `FencedOut`, and a Service
        someone else changed stops with `ForeignChange`, so no such change is ever overwritten.
        """
        if stable == canary:
            raise PermanentError(f"stable and canary are the same revision {stable!r}")
        traffic = [
            {"revisionName": stable, "percent": weights.stable, "latestRevision": False},
            {"revisionName": canary, "percent": weights.canary, "latestRevision": False},
        ]
        for attempt in range(self.conflict_retries + 1):
            current = self._get("services", namespace, service)
            if guard is not None:
                guard(_service_state(current))
            patch = {
                "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                "spec": {"traffic": traffic},
            }
            try:
                written = self._patch(namespace, service, patch)
            except _Conflict:
                self._sleep(self.backoff * 2**attempt * random.uniform(0.5, 1.5))
                continue
            return self._await_observed(namespace, service, int(written["metadata"]["generation"]))
        raise TransientError(
            f"traffic of {namespace}/{service} still conflicts with another writer after"
            f" {self.conflict_retries + 1} attempts"
        )

    def _await_observed(self, namespace: str, service: str, generation: int) -> ServiceState:
        deadline = self._monotonic() + self.settle_timeout
        while True:
            state = self.get_service(namespace, service)
            if state.observed_generation >= generation:
                return state
            if self._monotonic() >= deadline:
                raise TransientError(
                    f"{namespace}/{service}: generation {generation} written but not observed by the"
                    f" controller after {self.settle_timeout:g}s (observed {state.observed_generation})"
                )
            self._sleep(self.poll_interval)

    # --- events --------------------------------------------------------------------------------

    def record_event(self, namespace: str, service: str, *, reason: str, message: str, warning: bool) -> None:
        """A core/v1 Event on the Knative Service, so `kubectl describe ksvc` lists the transition.

        The Service is read once for its uid (then remembered): `kubectl describe` matches events
        on the involved object's name, namespace, kind and uid. Each event has a unique name
        (never patched: the service account may only `create` events).
        """
        uid = self._service_uids.get((namespace, service))
        if uid is None:
            uid = str(self._get("services", namespace, service)["metadata"].get("uid", ""))
            if len(self._service_uids) >= 10_000:
                self._service_uids.clear()
            self._service_uids[(namespace, service)] = uid
        now = datetime.now(UTC)
        event = client.CoreV1Event(
            api_version="v1",
            kind="Event",
            metadata=client.V1ObjectMeta(name=f"{service}.{uuid.uuid4().hex[:16]}", namespace=namespace),
            involved_object=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}",
                kind="Service",
                name=service,
                namespace=namespace,
                uid=uid,
            ),
            reason=reason,
            message=message[:1024],
            type="Warning" if warning else "Normal",
            source=client.V1EventSource(component=EVENT_SOURCE),
            reporting_component=EVENT_SOURCE,
            reporting_instance=socket.gethostname()[:128],
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        self._call(
            f"record event {reason} on {namespace}/{service}",
            lambda: client.CoreV1Api(self.api.api_client).create_namespaced_event(
                namespace, event, _request_timeout=self.request_timeout
            ),
        )

    # --- plumbing ------------------------------------------------------------------------------

    def _patch(self, namespace: str, service: str, patch: dict[str, Any]) -> dict[str, Any]:
        """One JSON merge patch (the client's default content type for custom objects)."""
        written = self._call(
            f"patch traffic of {namespace}/{service}",
            lambda: self.api.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "services", service, patch, _request_timeout=self.request_timeout
            ),
        )
        if not isinstance(written, dict):
            raise TransientError(f"patch {namespace}/{service}: unexpected answer {type(written).__name__}")
        return written

    def _get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        found = self._call(
            f"get {plural[:-1]} {namespace}/{name}",
            lambda: self.api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, _request_timeout=self.request_timeout
            ),
        )
        if not isinstance(found, dict):
            raise TransientError(f"get {plural[:-1]} {namespace}/{name}: unexpected answer {type(found).__name__}")
        return found

    def _call(self, what: str, request: Callable[[], T]) -> T:
        try:
            return request()
        except ApiException as exc:
            message = _server_message(exc)
            if exc.status == 409 and _reason(exc) == "Conflict":
                raise _Conflict(message) from exc
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


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return {}


def _targets(entries: list[dict[str, Any]] | None) -> tuple[TrafficTarget, ...]:
    return tuple(
        TrafficTarget(
            revision=str(entry.get("revisionName") or ""),
            percent=int(entry.get("percent") or 0),
            latest=bool(entry.get("latestRevision")),
            tag=entry.get("tag"),
        )
        for entry in entries or []
    )


def _service_state(found: dict[str, Any]) -> ServiceState:
    metadata, spec, status = found["metadata"], found.get("spec") or {}, found.get("status") or {}
    routes = _condition(found, "RoutesReady")
    return ServiceState(
        namespace=metadata["namespace"],
        name=metadata["name"],
        generation=int(metadata.get("generation", 0)),
        observed_generation=int(status.get("observedGeneration", 0)),
        resource_version=str(metadata.get("resourceVersion", "")),
        spec_traffic=_targets(spec.get("traffic")),
        status_traffic=_targets(status.get("traffic")),
        latest_created_revision=status.get("latestCreatedRevisionName"),
        latest_ready_revision=status.get("latestReadyRevisionName"),
        ready=str(_condition(found, "Ready").get("status", "Unknown")),
        routes_reason=str(routes.get("reason", "")),
        routes_message=str(routes.get("message", "")),
    )

"""The sandbox cluster's state: the objects of `sandbox.resources` (Knative Services and
Revisions, Istio VirtualServices and DestinationRules, Deployments) with Kubernetes write
semantics, and the core/v1 Events recorded about them.

Every write gets a new `resourceVersion`; spec changes bump `metadata.generation`; writes that
carry a stale resourceVersion fail with 409 Conflict. Errors are `ApiError`s that render as the
Kubernetes `Status` objects a real API server returns. All access happens on one asyncio loop,
so no locks are needed; listeners (the controller) are told about every change.
"""

from __future__ import annotations

import builtins
import copy
import itertools
import json
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sandbox.resources import KNATIVE, RESOURCES

GROUP = KNATIVE
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
KINDS = {"services": "Service", "revisions": "Revision"}
"""Knative's kinds, by plural (the OpenAPI documents describe these)."""

Listener = Callable[[str, str, str], None]
"""Called with (plural, namespace, name) after every change."""

Change = tuple[int, str, str, bytes]
"""One change as watches send it: (resourceVersion, plural, namespace, the WatchEvent as a JSON line)."""

Follower = Callable[[Change], None]

WATCH_HISTORY = 50_000
"""Changes kept for watches that resume from a resourceVersion; older ones are 410 Gone, as in Kubernetes."""


class ApiError(Exception):
    """An error the API server answers with a `Status` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }

    @classmethod
    def not_found(cls, plural: str, name: str) -> ApiError:
        return cls(404, "NotFound", f'{_qualified(plural)} "{name}" not found', _details(plural, name))

    @classmethod
    def already_exists(cls, plural: str, name: str) -> ApiError:
        return cls(409, "AlreadyExists", f'{_qualified(plural)} "{name}" already exists', _details(plural, name))

    @classmethod
    def conflict(cls, plural: str, name: str) -> ApiError:
        return cls(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {_qualified(plural)} "{name}": the object has been modified;'
            " please apply your changes to the latest version and try again",
            _details(plural, name),
        )

    @classmethod
    def invalid(cls, plural: str, name: str, field: str, problem: str) -> ApiError:
        resource = RESOURCES.get(plural)
        kind = (f"{resource.kind}.{resource.group}" if resource.group else resource.kind) if resource else plural
        return cls(
            422,
            "Invalid",
            f'{kind} "{name}" is invalid: {field}: {problem}',
            {
                **_details(plural, name),
                "causes": [{"reason": "FieldValueInvalid", "message": problem, "field": field}],
            },
        )


def _details(plural: str, name: str) -> dict[str, Any]:
    resource = RESOURCES.get(plural)
    return {
        "name": name,
        "group": resource.group if resource else GROUP,
        "kind": resource.plural if resource else plural,
    }


def _qualified(plural: str) -> str:
    """`services.serving.knative.dev`, `deployments.apps`: how the API server names a resource."""
    resource = RESOURCES.get(plural)
    return resource.qualified if resource else plural


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ClusterStore:
    def __init__(self) -> None:
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._names: dict[tuple[str, str], set[str]] = {}
        """(plural, namespace) -> names: a LIST reads one namespace, not every object (the controller
        lists a Service's revisions on each reconcile; scanning all of them made 2,000 Services
        quadratic)."""
        self._versions = itertools.count(1)
        self._listeners: list[Listener] = []
        self.latest_version = "0"
        self._events: dict[tuple[str, str], dict[str, Any]] = {}
        self.traffic_history: dict[tuple[str, str], list[dict[str, Any]]] = {}
        """Every spec.traffic a Service was given, in order (for tests of who wrote what when)."""
        self._changes: deque[Change] = deque(maxlen=WATCH_HISTORY)
        self._followers: set[Follower] = set()
        self._forgotten = 0
        """The newest change no longer kept."""

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def follow(self, follower: Follower) -> None:
        """`follower` is called with every later change (a watch); `unfollow` ends it."""
        self._followers.add(follower)

    def unfollow(self, follower: Follower) -> None:
        self._followers.discard(follower)

    def changes_since(self, version: int) -> builtins.list[Change] | None:
        """The changes after `version`, oldest first; None when some of them are no longer kept."""
        if version < self._forgotten:
            return None
        return [change for change in self._changes if change[0] > version]

    def peek(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object itself, not a copy: for read-only hot paths (the gateway)."""
        return self._objects.get((plural, namespace, name))

    def names(self, plural: str, namespace: str) -> builtins.list[str]:
        """The names of one kind in one namespace, sorted, without copying any object."""
        return sorted(self._names.get((plural, namespace), ()))

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        found = self._objects.get((plural, namespace, name))
        if found is None:
            raise ApiError.not_found(plural, name)
        return copy.deepcopy(found)

    def list(
        self, plural: str, namespace: str | None = None, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        found = []
        namespaces = [namespace] if namespace is not None else sorted(ns for kind, ns in self._names if kind == plural)
        for ns in namespaces:
            for name in sorted(self._names.get((plural, ns), ())):
                obj = self._objects[(plural, ns, name)]
                object_labels = obj["metadata"].get("labels") or {}
                if labels and any(object_labels.get(key) != value for key, value in labels.items()):
                    continue
                found.append(copy.deepcopy(obj))
        return found

    def create(self, plural: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        metadata = obj.setdefault("metadata", {})
        name = metadata.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(422, "Invalid", f"{_qualified(plural)} is invalid: metadata.name: Required value")
        if (plural, namespace, name) in self._objects:
            raise ApiError.already_exists(plural, name)
        metadata.update(
            namespace=namespace,
            uid=str(uuid.uuid4()),
            generation=1,
            creationTimestamp=now_rfc3339(),
            resourceVersion=self._next_version(),
        )
        obj.update(apiVersion=RESOURCES[plural].api_version, kind=RESOURCES[plural].kind)
        obj.setdefault("status", {})
        self._objects[(plural, namespace, name)] = obj
        self._names.setdefault((plural, namespace), set()).add(name)
        self._record("ADDED", plural, obj)
        self._notify(plural, namespace, name)
        return copy.deepcopy(obj)

    def replace(self, plural: str, namespace: str, name: str, obj: dict[str, Any]) -> dict[str, Any]:
        """A full update of metadata and spec; status is a subresource and is kept as it was."""
        current = self._objects.get((plural, namespace, name))
        if current is None:
            raise ApiError.not_found(plural, name)
        metadata = obj.get("metadata") or {}
        if str(metadata.get("resourceVersion", "")) != current["metadata"]["resourceVersion"]:
            raise ApiError.conflict(plural, name)
        updated = {
            "apiVersion": RESOURCES[plural].api_version,
            "kind": RESOURCES[plural].kind,
            "metadata": {
                **{k: v for k, v in metadata.items() if k in ("labels", "annotations", "finalizers")},
                **{k: current["metadata"][k] for k in ("name", "namespace", "uid", "creationTimestamp", "generation")},
            },
            "spec": obj.get("spec", {}),
            "status": current.get("status", {}),
        }
        if updated["spec"] != current.get("spec"):
            updated["metadata"]["generation"] = current["metadata"]["generation"] + 1
        if updated["spec"] == current.get("spec") and self._same_metadata(current, updated):
            return copy.deepcopy(current)  # a no-op write keeps its resourceVersion, as in Kubernetes
        updated["metadata"]["resourceVersion"] = self._next_version()
        self._objects[(plural, namespace, name)] = updated
        if plural == "services" and updated["spec"].get("traffic") != current.get("spec", {}).get("traffic"):
            self.traffic_history.setdefault((namespace, name), []).append(
                {"resourceVersion": updated["metadata"]["resourceVersion"], "traffic": updated["spec"].get("traffic")}
            )
        self._record("MODIFIED", plural, updated)
        self._notify(plural, namespace, name)
        return copy.deepcopy(updated)

    def update_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        current = self._objects.get((plural, namespace, name))
        if current is None or current.get("status") == status:
            return
        current["status"] = status
        current["metadata"]["resourceVersion"] = self._next_version()
        self._record("MODIFIED", plural, current)
        self._notify(plural, namespace, name)

    def delete(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        removed = self._objects.pop((plural, namespace, name), None)
        if removed is None:
            raise ApiError.not_found(plural, name)
        names = self._names[(plural, namespace)]
        names.discard(name)
        if not names:
            del self._names[(plural, namespace)]
        removed["metadata"]["resourceVersion"] = self._next_version()
        self._record("DELETED", plural, removed)
        self._notify(plural, namespace, name)
        return removed

    # --- core/v1 Events (what `kubectl describe ksvc` lists) -------------------------------------

    def create_event(self, namespace: str, event: dict[str, Any]) -> dict[str, Any]:
        """Store a core/v1 Event as given (Events are not admitted or reconciled)."""
        metadata = event.setdefault("metadata", {})
        name = metadata.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(422, "Invalid", "Event is invalid: metadata.name: Required value")
        involved = event.get("involvedObject")
        if not isinstance(involved, dict) or not involved.get("name"):
            raise ApiError(422, "Invalid", f'Event "{name}" is invalid: involvedObject.name: Required value')
        if involved.get("namespace") not in (None, namespace):
            raise ApiError(
                422, "Invalid", f'Event "{name}" is invalid: involvedObject.namespace: Invalid value: does not match'
            )
        if (namespace, name) in self._events:
            raise ApiError(409, "AlreadyExists", f'events "{name}" already exists', {"name": name, "kind": "events"})
        metadata.update(
            namespace=namespace,
            uid=str(uuid.uuid4()),
            creationTimestamp=now_rfc3339(),
            resourceVersion=self._next_version(),
        )
        event.update(apiVersion="v1", kind="Event")
        self._events[(namespace, name)] = event
        return copy.deepcopy(event)

    def list_events(self, namespace: str | None, fields: dict[str, str]) -> builtins.list[dict[str, Any]]:
        """Events of a namespace (or all), filtered by `involvedObject.*` field selectors."""
        found = []
        for (ns, _), event in self._events.items():  # in the order they were created
            if namespace is not None and ns != namespace:
                continue
            if all(_field(event, path) == value for path, value in fields.items()):
                found.append(copy.deepcopy(event))
        return found

    def _same_metadata(self, current: dict[str, Any], updated: dict[str, Any]) -> bool:
        keys = ("labels", "annotations", "finalizers", "generation")
        return all(current["metadata"].get(k) == updated["metadata"].get(k) for k in keys)

    def _next_version(self) -> str:
        self.latest_version = str(next(self._versions))
        return self.latest_version

    def _record(self, kind: str, plural: str, obj: dict[str, Any]) -> None:
        """Kept for watches that resume, and sent to the open ones; serialized once for all of them."""
        metadata = obj["metadata"]
        line = json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"
        change = (int(metadata["resourceVersion"]), plural, metadata["namespace"], line)
        if len(self._changes) == self._changes.maxlen:
            self._forgotten = self._changes[0][0]
        self._changes.append(change)
        for follower in builtins.list(self._followers):
            follower(change)

    def _notify(self, plural: str, namespace: str, name: str) -> None:
        for listener in self._listeners:
            listener(plural, namespace, name)


def _field(obj: dict[str, Any], path: str) -> str:
    """The value at a dotted field path as a string ("" when absent), as field selectors compare."""
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)

"""`KubernetesEvents`: each transition as a core/v1 Event on the routed object, so that
`kubectl describe ksvc` (or the VirtualService, for Istio) lists what autocanary did."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from kubernetes import client

from adapters.kubernetes.api import KubernetesApi

EVENT_SOURCE = "autocanary"


@dataclass(frozen=True)
class InvolvedKind:
    """The kind of object the Events are about (`kubectl describe` matches on it)."""

    group: str
    version: str
    plural: str
    kind: str


class KubernetesEvents:
    def __init__(self, api: KubernetesApi, involved: InvolvedKind) -> None:
        self.api = api
        self.involved = involved
        self._uids: dict[tuple[str, str], str] = {}

    def record_event(
        self,
        namespace: str,
        name: str,
        *,
        reason: str,
        message: str,
        warning: bool,
        count: int = 1,
        first_at: datetime | None = None,
        last_at: datetime | None = None,
    ) -> None:
        """One Event with a unique name (never patched: the service account may only `create` events).

        The object is read once for its uid (then remembered): `kubectl describe` matches events
        on the involved object's name, namespace, kind and uid.
        """
        involved = self.involved
        uid = self._uids.get((namespace, name))
        if uid is None:
            found = self.api.get(involved.group, involved.version, involved.plural, namespace, name)
            uid = str(found["metadata"].get("uid", ""))
            if len(self._uids) >= 10_000:
                self._uids.clear()
            self._uids[(namespace, name)] = uid
        now = datetime.now(UTC)
        event = client.CoreV1Event(
            api_version="v1",
            kind="Event",
            metadata=client.V1ObjectMeta(name=f"{name}.{uuid.uuid4().hex[:16]}", namespace=namespace),
            involved_object=client.V1ObjectReference(
                api_version=f"{involved.group}/{involved.version}",
                kind=involved.kind,
                name=name,
                namespace=namespace,
                uid=uid,
            ),
            reason=reason,
            message=message[:1024],
            type="Warning" if warning else "Normal",
            source=client.V1EventSource(component=EVENT_SOURCE),
            reporting_component=EVENT_SOURCE,
            reporting_instance=socket.gethostname()[:128],
            first_timestamp=first_at or now,
            last_timestamp=last_at or now,
            count=count,
        )
        self.api.create_event(namespace, event, f"record event {reason} on {namespace}/{name}")

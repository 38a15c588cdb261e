"""The sandbox's Knative controller: revisions from templates, status from spec.

Like the real one it acts a moment after each change (`reconcile_delay`): it creates a Revision
`{service}-{n:05d}` whenever the template changes, marks revisions Ready after their
`SANDBOX_READY_AFTER_S` (never, with `SANDBOX_NEVER_READY`), and reconciles the Service's status:
traffic resolved to revision names (a tagged entry with its own URL, `{tag}-{service}.{namespace}.
example.com`), latest created and ready revisions, observedGeneration, and
the ConfigurationsReady / RoutesReady / Ready conditions (`RevisionMissing` when traffic names a
revision that does not exist or is not ready; the route then keeps serving its previous split).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sandbox.store import ClusterStore, now_rfc3339

SERVICE_LABEL = "serving.knative.dev/service"
CONFIGURATION_LABEL = "serving.knative.dev/configuration"
GENERATION_LABEL = "serving.knative.dev/configurationGeneration"
DOMAIN = "example.com"


def tag_host(tag: str, service: str, namespace: str) -> str:
    """The host a traffic tag answers at: `{tag}-{service}.{namespace}.{domain}`."""
    return f"{tag}-{service}.{namespace}.{DOMAIN}"


def revision_env(revision: dict[str, Any]) -> dict[str, str]:
    """The environment variables of a revision's first container."""
    containers = revision.get("spec", {}).get("containers") or [{}]
    return {e["name"]: str(e.get("value", "")) for e in containers[0].get("env") or [] if "name" in e}


def is_ready(obj: dict[str, Any] | None) -> bool:
    return _condition(obj, "Ready").get("status") == "True"


def _condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for condition in (obj or {}).get("status", {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return {}


class Controller:
    def __init__(self, store: ClusterStore, reconcile_delay: float = 0.2, default_ready_after: float = 0.5) -> None:
        self.store = store
        self.reconcile_delay = reconcile_delay
        self.default_ready_after = default_ready_after
        self._pending: set[tuple[str, str]] = set()
        self._templates: dict[tuple[str, str], str] = {}
        self._generations: dict[tuple[str, str], int] = {}
        store.subscribe(self._changed)

    def _changed(self, plural: str, namespace: str, name: str) -> None:
        if plural == "services":
            self._schedule(namespace, name)
        elif plural == "revisions":
            revision = self.store.peek("revisions", namespace, name)
            if revision is not None:
                self._schedule(namespace, revision["metadata"]["labels"][SERVICE_LABEL])

    def _schedule(self, namespace: str, service: str) -> None:
        key = (namespace, service)
        if key not in self._pending:
            self._pending.add(key)
            asyncio.get_running_loop().call_later(self.reconcile_delay, self._run, key)

    def _run(self, key: tuple[str, str]) -> None:
        self._pending.discard(key)
        self.reconcile(*key)

    def reconcile(self, namespace: str, name: str) -> None:
        service = self.store.peek("services", namespace, name)
        if service is None:
            self._templates.pop((namespace, name), None)
            return
        template = service.get("spec", {}).get("template") or {}
        fingerprint = json.dumps(template, sort_keys=True)
        if self._templates.get((namespace, name)) != fingerprint:
            self._templates[(namespace, name)] = fingerprint
            self._create_revision(namespace, name, template)
        self.store.update_status("services", namespace, name, self._service_status(namespace, name, service))

    def _create_revision(self, namespace: str, service: str, template: dict[str, Any]) -> None:
        number = self._generations.get((namespace, service), 0) + 1
        self._generations[(namespace, service)] = number
        name = (template.get("metadata") or {}).get("name") or f"{service}-{number:05d}"
        if self.store.peek("revisions", namespace, name) is not None:
            return
        revision = {
            "metadata": {
                "name": name,
                "labels": {
                    SERVICE_LABEL: service,
                    CONFIGURATION_LABEL: service,
                    GENERATION_LABEL: str(number),
                },
                "ownerReferences": [{"apiVersion": "serving.knative.dev/v1", "kind": "Configuration", "name": service}],
            },
            "spec": template.get("spec", {}),
            "status": {
                "observedGeneration": 1,
                "conditions": [_cond("Ready", "Unknown", "Deploying", "")],
            },
        }
        self.store.create("revisions", namespace, revision)
        env = revision_env(revision)
        if env.get("SANDBOX_NEVER_READY", "").lower() in ("1", "true", "yes"):
            message = "Container failed to become ready (SANDBOX_NEVER_READY)"
            self.store.update_status(
                "revisions",
                namespace,
                name,
                {"observedGeneration": 1, "conditions": [_cond("Ready", "Unknown", "Deploying", message)]},
            )
            return
        delay = float(env.get("SANDBOX_READY_AFTER_S", self.default_ready_after))
        asyncio.get_running_loop().call_later(delay, self._mark_ready, namespace, name)

    def _mark_ready(self, namespace: str, name: str) -> None:
        if self.store.peek("revisions", namespace, name) is None:
            return
        ready = [_cond(kind, "True") for kind in ("ContainerHealthy", "Ready", "ResourcesAvailable")]
        self.store.update_status("revisions", namespace, name, {"observedGeneration": 1, "conditions": ready})

    def _service_status(self, namespace: str, name: str, service: dict[str, Any]) -> dict[str, Any]:
        previous = service.get("status") or {}
        revisions = sorted(
            self.store.list("revisions", namespace, {SERVICE_LABEL: name}),
            key=lambda r: int(r["metadata"]["labels"][GENERATION_LABEL]),
        )
        latest_created = revisions[-1]["metadata"]["name"] if revisions else None
        ready_names = [r["metadata"]["name"] for r in revisions if is_ready(r)]
        latest_ready = ready_names[-1] if ready_names else None

        if latest_created and latest_created == latest_ready:
            configurations = _cond("ConfigurationsReady", "True")
        else:
            configurations = _cond(
                "ConfigurationsReady",
                "Unknown",
                "RevisionMissing",
                "Configuration is waiting for a Revision to become ready.",
            )

        traffic, routes = self._route(
            service, {r["metadata"]["name"] for r in revisions}, set(ready_names), latest_ready
        )
        for entry in traffic or []:
            if entry.get("tag"):  # Knative's default domain template for a tag: {tag}-{service}.{namespace}
                entry["url"] = f"http://{tag_host(entry['tag'], name, namespace)}"
        status: dict[str, Any] = {
            "observedGeneration": service["metadata"]["generation"],
            "latestCreatedRevisionName": latest_created,
            "latestReadyRevisionName": latest_ready,
            "url": f"http://{name}.{namespace}.{DOMAIN}",
            "address": {"url": f"http://{name}.{namespace}.svc.cluster.local"},
            "traffic": traffic if traffic is not None else previous.get("traffic", []),
        }
        ready = _combined(configurations, routes)
        status["conditions"] = [_keep_time(previous, c) for c in (configurations, ready, routes)]
        return {k: v for k, v in status.items() if v is not None}

    def _route(
        self, service: dict[str, Any], existing: set[str], ready: set[str], latest_ready: str | None
    ) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
        resolved = []
        for target in service.get("spec", {}).get("traffic") or []:
            entry: dict[str, Any] = {"percent": target.get("percent", 0)}
            if target.get("latestRevision"):
                if latest_ready is None:
                    return None, _cond(
                        "RoutesReady",
                        "Unknown",
                        "RevisionMissing",
                        "Configuration is waiting for a Revision to become ready.",
                    )
                entry.update(revisionName=latest_ready, latestRevision=True)
            else:
                revision = target["revisionName"]
                if revision not in existing:
                    return None, _cond(
                        "RoutesReady",
                        "False",
                        "RevisionMissing",
                        f'Revision "{revision}" referenced in traffic not found.',
                    )
                if revision not in ready:
                    return None, _cond(
                        "RoutesReady",
                        "Unknown",
                        "RevisionMissing",
                        f'Revision "{revision}" is not yet ready.',
                    )
                entry.update(revisionName=revision, latestRevision=False)
            if target.get("tag"):
                entry["tag"] = target["tag"]
            resolved.append(entry)
        return resolved, _cond("RoutesReady", "True")


def _cond(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    condition = {"type": kind, "status": status, "lastTransitionTime": now_rfc3339()}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _combined(configurations: dict[str, Any], routes: dict[str, Any]) -> dict[str, Any]:
    for state in ("False", "Unknown"):
        for condition in (configurations, routes):
            if condition["status"] == state:
                return _cond("Ready", state, condition.get("reason", ""), condition.get("message", ""))
    return _cond("Ready", "True")


def _keep_time(previous: dict[str, Any], condition: dict[str, Any]) -> dict[str, Any]:
    """Keep lastTransitionTime while a condition's status does not change (as Knative does)."""
    before = _condition({"status": previous}, condition["type"])
    if before.get("status") == condition["status"]:
        condition["lastTransitionTime"] = before.get("lastTransitionTime", condition["lastTransitionTime"])
    return condition

"""The sandbox's Deployment controller: `apps/v1` Deployments become available, as their pods would.

A moment after each change (`reconcile_delay`) it sets the status a real Deployment reports:
`replicas`, `updatedReplicas`, `readyReplicas` and `availableReplicas` (all `spec.replicas`,
default 1) and the `Available` condition, once the pod template's first container has been up
for its `SANDBOX_READY_AFTER_S` (the controller's default otherwise); with `SANDBOX_NEVER_READY`
its pods never become available (`MinimumReplicasUnavailable`). The same `SANDBOX_*` variables as
revisions (sandbox/gateway.py) set how its pods answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sandbox.store import ClusterStore, now_rfc3339


def pod_env(deployment: dict[str, Any]) -> dict[str, str]:
    """The environment variables of the pod template's first container."""
    containers = ((deployment.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or [{}]
    return {e["name"]: str(e.get("value", "")) for e in containers[0].get("env") or [] if "name" in e}


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return dict(((deployment.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {})


def available_replicas(deployment: dict[str, Any] | None) -> int:
    return int(((deployment or {}).get("status") or {}).get("availableReplicas") or 0)


class DeploymentController:
    def __init__(self, store: ClusterStore, reconcile_delay: float = 0.2, default_ready_after: float = 0.5) -> None:
        self.store = store
        self.reconcile_delay = reconcile_delay
        self.default_ready_after = default_ready_after
        self._seen: dict[tuple[str, str], int] = {}
        store.subscribe(self._changed)

    def _changed(self, plural: str, namespace: str, name: str) -> None:
        if plural != "deployments":
            return
        found = self.store.peek("deployments", namespace, name)
        if found is None:
            self._seen.pop((namespace, name), None)
            return
        generation = int(found["metadata"].get("generation", 1))
        if self._seen.get((namespace, name)) == generation:
            return  # a status write of ours, or metadata only
        self._seen[(namespace, name)] = generation
        loop = asyncio.get_running_loop()
        loop.call_later(self.reconcile_delay, self._progressing, namespace, name, generation)
        env = pod_env(found)
        if env.get("SANDBOX_NEVER_READY", "").lower() in ("1", "true", "yes"):
            return
        delay = self.reconcile_delay + float(env.get("SANDBOX_READY_AFTER_S", self.default_ready_after))
        loop.call_later(delay, self._available, namespace, name, generation)

    def _progressing(self, namespace: str, name: str, generation: int) -> None:
        self._set_status(namespace, name, generation, available=False)

    def _available(self, namespace: str, name: str, generation: int) -> None:
        self._set_status(namespace, name, generation, available=True)

    def _set_status(self, namespace: str, name: str, generation: int, *, available: bool) -> None:
        """The status of this generation (a newer one has its own timers), all pods up or none."""
        found = self.store.peek("deployments", namespace, name)
        if found is None or int(found["metadata"].get("generation", 1)) != generation:
            return
        replicas = int((found.get("spec") or {}).get("replicas", 1))
        up = replicas if available else 0
        status: dict[str, Any] = {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": up,
            "availableReplicas": up,
        }
        if available:
            status["conditions"] = [
                _condition("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
            ]
        else:
            status["unavailableReplicas"] = replicas
            status["conditions"] = [
                _condition("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
            ]
        self.store.update_status("deployments", namespace, name, status)


def _condition(status: str, reason: str, message: str) -> dict[str, Any]:
    now = now_rfc3339()
    return {
        "type": "Available",
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }

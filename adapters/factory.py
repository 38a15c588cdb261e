"""Which backends serve a rollout, by its target's kind: the one table a new kind is added to.

A new target kind (Istio, Gateway API) is new modules behind the ports of `rollouts.ports` plus
one entry in `kubernetes_backends`.
"""

from __future__ import annotations

from adapters import knative
from adapters.kubernetes.api import KubernetesApi
from adapters.kubernetes.events import InvolvedKind, KubernetesEvents
from rollouts.ports import Backends, KindBackends


def kubernetes_backends(api: KubernetesApi, *, settle_timeout: float = 10.0, read_concurrency: int = 16) -> Backends:
    """The backends of every target kind, sharing one Kubernetes client."""
    return Backends(
        {
            knative.KIND: KindBackends(
                target=knative.KnativeTarget(api, read_concurrency=read_concurrency),
                router=knative.KnativeRouter(api, settle_timeout=settle_timeout),
                events=KubernetesEvents(api, InvolvedKind(knative.GROUP, knative.VERSION, "services", "Service")),
            ),
        }
    )

"""Which backends serve a rollout: by its target's kind (`kubernetes_backends`) and by each
notification target's kind (`notifiers`), the two tables a new backend is added to.

A new target kind (Istio, Gateway API) is new modules behind the ports of `rollouts.ports` plus
one entry in `kubernetes_backends`; a new notification kind, a module in `adapters/notifiers`
plus one entry in `notifiers`.
"""

from __future__ import annotations

from collections.abc import Mapping

from adapters import gateway_api, istio, knative
from adapters.kubernetes.api import KubernetesApi
from adapters.kubernetes.events import InvolvedKind, KubernetesEvents
from adapters.kubernetes.watched import WatchedObjects
from adapters.notifiers.http import HttpPoster
from adapters.notifiers.slack import SlackNotifier
from adapters.notifiers.webhook import WebhookNotifier
from policies import NotificationKind
from rollouts.ports import Backends, KindBackends, Notifier


def kubernetes_backends(
    api: KubernetesApi, *, settle_timeout: float = 10.0, read_concurrency: int = 16, watch: bool = False
) -> Backends:
    """The backends of every target kind, sharing one Kubernetes client.

    With `watch` (workers), each kind's routed objects are followed by a watch started here
    (`adapters.kubernetes.watched`): ticks read them from memory, writes go through as before.
    """
    services, virtual_services, http_routes = (
        (
            WatchedObjects(api, knative.GROUP, knative.VERSION, "services").start(),
            WatchedObjects(api, istio.GROUP, istio.VERSION, "virtualservices").start(),
            WatchedObjects(api, gateway_api.GROUP, gateway_api.VERSION, gateway_api.PLURAL).start(),
        )
        if watch
        else (None, None, None)
    )
    return Backends(
        {
            knative.KIND: KindBackends(
                target=knative.KnativeTarget(api, read_concurrency=read_concurrency, watched=services),
                router=knative.KnativeRouter(api, settle_timeout=settle_timeout, watched=services),
                events=KubernetesEvents(api, InvolvedKind(knative.GROUP, knative.VERSION, "services", "Service")),
            ),
            istio.KIND: KindBackends(
                target=istio.IstioTarget(api, read_concurrency=read_concurrency, watched=virtual_services),
                router=istio.IstioRouter(api, watched=virtual_services),
                events=KubernetesEvents(
                    api, InvolvedKind(istio.GROUP, istio.VERSION, "virtualservices", "VirtualService")
                ),
            ),
            gateway_api.KIND: KindBackends(
                target=gateway_api.GatewayApiTarget(api, read_concurrency=read_concurrency, watched=http_routes),
                router=gateway_api.GatewayApiRouter(api, watched=http_routes),
                events=KubernetesEvents(
                    api, InvolvedKind(gateway_api.GROUP, gateway_api.VERSION, gateway_api.PLURAL, "HTTPRoute")
                ),
            ),
        }
    )


def notifiers(poster: HttpPoster, secrets: Mapping[str, str]) -> dict[NotificationKind, Notifier]:
    """The backend of each notification kind (a new kind is a module in adapters/notifiers and a line here)."""
    return {
        NotificationKind.WEBHOOK: WebhookNotifier(poster, secrets),
        NotificationKind.SLACK: SlackNotifier(poster),
    }

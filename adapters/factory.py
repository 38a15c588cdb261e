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
from adapters.notifiers.http import HttpPoster
from adapters.notifiers.slack import SlackNotifier
from adapters.notifiers.webhook import WebhookNotifier
from policies import NotificationKind
from rollouts.ports import Backends, KindBackends, Notifier


def kubernetes_backends(api: KubernetesApi, *, settle_timeout: float = 10.0, read_concurrency: int = 16) -> Backends:
    """The backends of every target kind, sharing one Kubernetes client."""
    return Backends(
        {
            knative.KIND: KindBackends(
                target=knative.KnativeTarget(api, read_concurrency=read_concurrency),
                router=knative.KnativeRouter(api, settle_timeout=settle_timeout),
                events=KubernetesEvents(api, InvolvedKind(knative.GROUP, knative.VERSION, "services", "Service")),
            ),
            istio.KIND: KindBackends(
                target=istio.IstioTarget(api, read_concurrency=read_concurrency),
                router=istio.IstioRouter(api),
                events=KubernetesEvents(
                    api, InvolvedKind(istio.GROUP, istio.VERSION, "virtualservices", "VirtualService")
                ),
            ),
            gateway_api.KIND: KindBackends(
                target=gateway_api.GatewayApiTarget(api, read_concurrency=read_concurrency),
                router=gateway_api.GatewayApiRouter(api),
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

"""The API process: builds the real dependencies from settings (`uvicorn api.main:app`).

This is the composition root of the API: the only place it meets the Kubernetes adapters, the
Prometheus adapter and Celery, so `api.app` itself stays on the domain and the store.
"""

from __future__ import annotations

from celery import Celery
from fastapi import FastAPI

from adapters.dns import resolve
from adapters.factory import kubernetes_backends
from adapters.kubernetes.api import KubernetesApi
from adapters.prometheus import PrometheusMetrics
from adapters.redis_store import RolloutStore
from api.app import create_app
from api.deps import Dependencies
from api.settings import ApiSettings
from api.site_policies import SitePolicyError, read_site_policies
from policies import EgressRules


def build(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    try:
        site_policies = read_site_policies(settings.policies_dir)
        EgressRules.parse(settings.notify_allowed_hosts)
        redis_location = settings.redis()
    except (SitePolicyError, ValueError) as exc:
        raise SystemExit(f"autocanary api: {exc}") from exc  # one clear line in the pod's log, no traceback
    store = RolloutStore.at(redis_location, settings.redis_prefix)
    kubernetes = KubernetesApi.from_kubeconfig(settings.kubeconfig, settings.kube_context)
    prometheus = PrometheusMetrics(settings.prometheus(timeout=2.0, retries=0))  # the workers' auth and TLS
    broker_url, broker_options = redis_location.celery_broker()
    celery = Celery("autocanary-api", broker=broker_url)
    celery.conf.broker_transport_options = broker_options

    def enqueue(task: str, args: list[object]) -> None:
        celery.send_task(task, args=args, queue="control")

    probes = {"redis": store.ping, "prometheus": prometheus.ready, "kubernetes": kubernetes.ready}
    backends = kubernetes_backends(kubernetes, settle_timeout=5.0)
    deps = Dependencies(store, backends, enqueue, probes, site_policies=site_policies, resolve=resolve)
    return create_app(settings, deps)


def __getattr__(name: str) -> FastAPI:
    """`api.main:app` builds the application on first use (so importing this module is cheap)."""
    if name == "app":
        return build()
    raise AttributeError(name)

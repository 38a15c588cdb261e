"""Settings of the worker and scheduler processes, read from `AUTOCANARY_*` environment variables."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters.prometheus import PrometheusSettings


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTOCANARY_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis for rollouts, events and schedule, and the Celery broker."""
    redis_prefix: str = "autocanary"
    """Prefix of every key autocanary writes (several installations can share one Redis)."""
    kubeconfig: str | None = None
    """Path of a kubeconfig; unset: in-cluster config in a pod, else ~/.kube/config."""
    kube_context: str | None = None
    prometheus_url: str = "http://127.0.0.1:9090"
    prometheus_bearer_token: str | None = None
    prometheus_username: str | None = None
    prometheus_password: str | None = None
    prometheus_ca_file: str | None = None
    prometheus_verify_tls: bool = True
    prometheus_timeout_seconds: float = 5.0
    metrics_lag_seconds: float = 1.0
    """How far behind now metrics are read, so the last scrape has landed (about a scrape interval)."""
    metrics_min_window_seconds: float = 3.0
    """Shortest window judged: at least twice the Prometheus scrape interval (increase() needs two samples)."""
    lease_seconds: float = 30.0
    """How long a worker owns a rollout it is ticking; a killed worker's rollouts are free after this."""
    batch_size: int = 500
    """Most rollouts per tick task; a scheduler round sends what is due in as few tasks as this allows,
    so Prometheus queries per round do not grow with the number of rollouts."""
    claim_seconds: float = 15.0
    """When a sent tick does not happen (worker killed, message lost), the rollout is sent again after this."""
    scheduler_poll_seconds: float = 0.5
    retention_days: float = Field(default=30.0, ge=0)
    """Ended rollouts and their event logs are deleted this long after they ended (0: kept forever)."""
    notify_webhook_url: str | None = None
    """A webhook told about every rollout's transitions (JSON, signed when a secret is set)."""
    notify_webhook_secret: str | None = None
    """HMAC-SHA256 key for the global webhook's X-Autocanary-Signature header."""
    notify_slack_url: str | None = None
    """A Slack incoming webhook told about every rollout's transitions."""
    notify_allowed_hosts: str = ""
    """Hosts a rollout's own notification targets may name (`hooks.slack.com`, `*.example.com`,
    `10.0.0.0/8`), comma-separated; empty: only the installation's policies and global targets notify."""
    notify_reclaim_seconds: float = 30.0
    """A notification a relay took and did not finish (its worker died) is delivered by another after this."""
    kubernetes_events: bool = True
    """Record each transition as a Kubernetes Event on the Knative Service (needs `create events`)."""
    write_concurrency: int = Field(default=16, ge=1, le=256)
    """Traffic writes one tick task sends to the Kubernetes API at once (each waits for the controller)."""
    settle_timeout_seconds: float = 10.0
    """How long the router waits for the Knative controller to observe a traffic change."""

    def prometheus(self) -> PrometheusSettings:
        basic = (self.prometheus_username, self.prometheus_password or "") if self.prometheus_username else None
        return PrometheusSettings(
            url=self.prometheus_url,
            bearer_token=self.prometheus_bearer_token,
            basic_auth=basic,
            verify_tls=self.prometheus_verify_tls,
            ca_file=self.prometheus_ca_file,
            timeout=self.prometheus_timeout_seconds,
        )

    @property
    def metrics_lag(self) -> timedelta:
        return timedelta(seconds=self.metrics_lag_seconds)

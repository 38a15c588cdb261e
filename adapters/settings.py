"""The settings every autocanary process shares, read from `AUTOCANARY_*` environment variables:
where Redis, the Kubernetes API and Prometheus are, and how to reach them (auth, TLS).

`api.settings.ApiSettings` and `workers.settings.WorkerSettings` extend this one base, so the
API's `/readyz` reaches Prometheus with the same credentials and TLS as the workers' queries.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters.prometheus import PrometheusSettings
from adapters.redis_store.connection import RedisLocation


class SharedSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTOCANARY_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis for rollouts, events and schedule, and the Celery broker."""
    redis_sentinels: str = ""
    """`host:port` of Redis Sentinels, comma-separated; set, Redis is the primary they name (the
    URL then gives only the password and database)."""
    redis_master_name: str = "mymaster"
    """The name of the group the Sentinels watch."""
    redis_sentinel_password: str | None = None
    redis_wait_replicas: int = 0
    """Writes that must survive a failover (registrations, commands, leases, saves) wait until
    this many replicas hold them; 0: do not wait."""
    redis_wait_timeout_ms: int = 1000
    """How long such a write waits for its replicas before it is reported as failed (retried)."""
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
    notify_allowed_hosts: str = ""
    """Hosts a rollout's own notification targets may name (`hooks.slack.com`, `*.example.com`,
    `10.0.0.0/8`), comma-separated; empty: only the installation's policies and global targets notify."""

    def redis(self) -> RedisLocation:
        """Where Redis is; a ValueError names the setting that is wrong."""
        return RedisLocation.parse(
            self.redis_url,
            self.redis_sentinels,
            self.redis_master_name,
            self.redis_sentinel_password,
            self.redis_wait_replicas,
            self.redis_wait_timeout_ms,
        )

    def prometheus(self, *, timeout: float | None = None, retries: int = 2) -> PrometheusSettings:
        basic = (self.prometheus_username, self.prometheus_password or "") if self.prometheus_username else None
        return PrometheusSettings(
            url=self.prometheus_url,
            bearer_token=self.prometheus_bearer_token,
            basic_auth=basic,
            verify_tls=self.prometheus_verify_tls,
            ca_file=self.prometheus_ca_file,
            timeout=self.prometheus_timeout_seconds if timeout is None else timeout,
            retries=retries,
        )

"""Settings of the API process, read from `AUTOCANARY_*` environment variables."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTOCANARY_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis holding the rollouts (the same as the workers')."""
    redis_prefix: str = "autocanary"
    kubeconfig: str | None = None
    """Path of a kubeconfig; unset: in-cluster config in a pod, else ~/.kube/config."""
    kube_context: str | None = None
    prometheus_url: str = "http://127.0.0.1:9090"
    """Only for /readyz: the workers query Prometheus, the API does not."""
    tokens: str = ""
    """Tokens as `name:role:secret` separated by commas (roles: viewer, deployer, operator)."""
    tokens_file: str | None = None
    """A YAML or JSON list of {name, role, token}; added to `tokens`."""
    max_body_bytes: int = 65_536
    """Request bodies larger than this are refused with 413."""
    sse_poll_ms: int = 1000
    """How long an event stream waits for news before checking whether the rollout ended."""
    notify_allowed_hosts: str = ""
    """Hosts a rollout's own notification targets may name (`hooks.slack.com`, `*.example.com`,
    `10.0.0.0/8`), comma-separated; empty: only the installation's policies and global targets notify."""
    metrics_token_required: bool = False
    """Require a viewer token on /metrics (it names every active rollout's namespace, service and revision)."""
    policies_dir: str | None = None
    """A directory of the installation's own policies (`NAME.yaml`), e.g. a mounted ConfigMap."""

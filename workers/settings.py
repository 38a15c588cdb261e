"""Settings of the worker and scheduler processes, read from `AUTOCANARY_*` environment variables."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from adapters.settings import SharedSettings


class WorkerSettings(SharedSettings):
    """The worker and scheduler processes: the shared connections, plus ticking and notifying."""

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
    scheduler_max_queued_batches: int = Field(default=4, ge=1)
    """The scheduler sends no more tick batches while this many wait for a worker; what is due then
    waits in the schedule and goes out in larger batches when a worker is free."""
    retention_days: float = Field(default=30.0, ge=0)
    """Ended rollouts and their event logs are deleted this long after they ended (0: kept forever)."""
    notify_webhook_url: str | None = None
    """A webhook told about every rollout's transitions (JSON, signed when a secret is set)."""
    notify_webhook_secret: str | None = None
    """HMAC-SHA256 key for the global webhook's X-Autocanary-Signature header."""
    notify_slack_url: str | None = None
    """A Slack incoming webhook told about every rollout's transitions."""
    notify_reclaim_seconds: float = 30.0
    """A notification a relay took and did not finish (its worker died) is delivered by another after this."""
    kubernetes_events: bool = True
    """Record each transition as a Kubernetes Event on the Knative Service (needs `create events`)."""
    events_per_second: float = Field(default=20.0, gt=0)
    """Routine progress Events (started, step advanced) each relay sends per second at most (after a
    burst of five seconds' worth); the rest wait and are combined. Warnings and final Events are never held."""
    write_concurrency: int = Field(default=16, ge=1, le=256)
    """Traffic writes one tick task sends to the Kubernetes API at once (each waits for the controller)."""
    watch_targets: bool = True
    """Follow the routed objects (Knative Services, VirtualServices, HTTPRoutes) with one watch per
    kind, cluster-wide, and tick from that copy instead of a read per rollout (needs `list` and
    `watch` on them cluster-wide; refused, the worker reads each object as without it)."""
    settle_timeout_seconds: float = 10.0
    """How long the router waits for the Knative controller to observe a traffic change."""

    @property
    def metrics_lag(self) -> timedelta:
        return timedelta(seconds=self.metrics_lag_seconds)

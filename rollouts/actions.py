"""The effects the engine asks for, as values. Only the runner carries them out.

Traffic actions are intents: the runner writes them through the rollout's `Router`, and a rollout
in `promoting` or `rolling_back` keeps asking for its final write until the router confirms it
(`TrafficApplied`), so a worker that dies between deciding and writing loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from policies import NotificationEvent


@dataclass(frozen=True)
class RequestMatch:
    """Requests that reach the canary whatever the weights: a header, cookie, URI or query
    parameter compared `exact`ly, by `prefix` or by `regex` (or a Knative tag)."""

    field: str
    """`header`, `cookie`, `uri`, `query`, `method` or `tag`."""
    value: str
    name: str = ""
    """The header, cookie or query parameter (empty for `uri` and `tag`)."""
    how: str = "exact"


@dataclass(frozen=True)
class SetTraffic:
    """Pin both revisions by name with these percents (they always sum to 100); with `matches`,
    the requests that match all of them go to the canary as well (a match step)."""

    stable: int
    canary: int
    matches: tuple[RequestMatch, ...] = ()

    def __post_init__(self) -> None:
        if not (0 <= self.stable <= 100 and 0 <= self.canary <= 100) or self.stable + self.canary != 100:
            raise ValueError(f"traffic must be two percents summing to 100, got {self.stable}/{self.canary}")


@dataclass(frozen=True)
class Promote:
    """Route 100 % to the canary."""


@dataclass(frozen=True)
class Rollback:
    """Route 100 % back to the stable, for this reason."""

    reason: str


@dataclass(frozen=True)
class ScheduleTick:
    """Look at this rollout again at `at` (immediately when `at` is now)."""

    at: datetime


@dataclass(frozen=True)
class Notify:
    """Tell people (webhooks, Slack, Kubernetes Events) about a transition."""

    event: NotificationEvent
    message: str


Action = SetTraffic | Promote | Rollback | ScheduleTick | Notify

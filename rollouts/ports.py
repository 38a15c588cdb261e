"""The narrow interfaces the runner needs from the outside world, and the values they return.

How traffic is split is one of the three things that vary independently (style.md): Knative
now (`workers.knative.KnativeRouter`), Istio later. The runner and the scenario tests' fakes
both speak this protocol; the values are plain and frozen so the engine's side stays pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from rollouts.actions import SetTraffic


@dataclass(frozen=True)
class TrafficTarget:
    revision: str
    percent: int
    latest: bool = False
    tag: str | None = None


@dataclass(frozen=True)
class ServiceState:
    """What the router saw of a Service: its intent (spec) and what is live (status)."""

    namespace: str
    name: str
    generation: int
    observed_generation: int
    resource_version: str
    spec_traffic: tuple[TrafficTarget, ...]
    status_traffic: tuple[TrafficTarget, ...]
    latest_created_revision: str | None
    latest_ready_revision: str | None
    ready: str
    """The Service's Ready condition: "True", "False" or "Unknown"."""
    routes_reason: str = ""
    routes_message: str = ""

    @property
    def observed(self) -> bool:
        """The controller has reconciled the latest spec."""
        return self.observed_generation >= self.generation

    @property
    def split(self) -> dict[str, int]:
        """Live percent per revision (one revision may appear in several targets)."""
        return sum_by_revision(self.status_traffic)

    def pinned(self, stable: str, canary: str) -> dict[str, int] | None:
        """The spec's split when it pins exactly these two revisions by name, else None."""
        if any(target.latest for target in self.spec_traffic):
            return None
        split = sum_by_revision(self.spec_traffic)
        return split if set(split) <= {stable, canary} else None

    def is_live(self, weights: SetTraffic, stable: str, canary: str) -> bool:
        """The live split is exactly this one."""
        live = {revision: percent for revision, percent in self.split.items() if percent}
        wanted = {
            revision: percent for revision, percent in ((stable, weights.stable), (canary, weights.canary)) if percent
        }
        return self.observed and live == wanted


@dataclass(frozen=True)
class RevisionState:
    namespace: str
    name: str
    ready: str
    """The Revision's Ready condition: "True", "False" or "Unknown"."""
    reason: str = ""
    message: str = ""

    @property
    def is_ready(self) -> bool:
        return self.ready == "True"


def sum_by_revision(targets: tuple[TrafficTarget, ...]) -> dict[str, int]:
    split: dict[str, int] = {}
    for target in targets:
        split[target.revision] = split.get(target.revision, 0) + target.percent
    return split


WriteGuard = Callable[[ServiceState], None]
"""Asked with every read of the write path (the first and each after a 409), before the write
conditioned on it: raises `FencedOut` when the caller lost the rollout, `ForeignChange` when
the Service is no longer as autocanary left it; returning means the write may go out."""


class TrafficRouter(Protocol):
    """Moves traffic between two revisions of one service."""

    def get_service(self, namespace: str, service: str) -> ServiceState: ...

    def current_split(self, namespace: str, service: str) -> Mapping[str, int]: ...

    def list_services(self, namespace: str) -> Mapping[str, ServiceState]: ...

    def get_revision(self, namespace: str, revision: str) -> RevisionState: ...

    def set_split(
        self,
        namespace: str,
        service: str,
        stable: str,
        canary: str,
        weights: SetTraffic,
        guard: WriteGuard | None = None,
    ) -> ServiceState:
        """Write the split; `guard` sees the Service as read before each conditional write and
        stops the write by raising (`FencedOut`, `ForeignChange`)."""
        ...

"""The ports: the narrow interfaces between the pure core and the outside world, and their values.

Three things vary independently (design.md, "Three axes"), each behind one protocol here:

- `Target`: what is rolled out and how it is observed (a Knative Service and its revisions;
  two Deployments behind an Istio host): does the object and each version exist, is the
  canary ready, what is live, and registration's checks (`resolve`). Whether someone else
  changed it is a pure rule over what it shows (`rollouts.causes.foreign_change`).
- `Router`: how traffic is split, after Argo Rollouts' `TrafficRoutingReconciler`: set the
  weights, set a request-match route (for the `match_fields` it can express), verify what is
  live, remove what it manages.
- `MetricsProvider`: per-version request counts, errors and latency buckets for a batch of
  versions over one window.

Beside them: `EventRecorder` (Kubernetes Events on the routed object), `Notifier` (one backend
per notification kind: webhook, Slack) and the `RolloutStore`
the runner works through (Redis in `adapters.redis_store`, in memory in the scenario tests). A factory
(`adapters.factory`) picks the target and router of each rollout from its target's kind, so one
installation rolls out Knative Services and Istio-routed Deployments side by side. The values
are plain and frozen, so the engine's side stays pure; the tests' fakes speak the same protocols.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from policies import CustomMetrics, Dialect, NotificationTarget
from rollouts.actions import Notify, RequestMatch, SetTraffic
from rollouts.counts import RevisionCounts, RevisionRef
from rollouts.errors import TransientError, UnknownTargetKind

__all__ = ["RequestMatch"]  # re-exported: routers read it from here

if TYPE_CHECKING:  # the store's values name the Rollout, whose model names TargetRef from here
    from rollouts.log import LogEntry, Notification
    from rollouts.model import ManualActionKind, Rollout
    from rollouts.records import Command, SaveItem, SaveResult


@dataclass(frozen=True)
class TargetRef:
    """What one rollout moves traffic on: the routed object of a kind, and its two versions.

    Knative: the Service and two revisions. Istio: the VirtualService, two subsets of its
    DestinationRule, the `http` route autocanary manages (`route`, by name; empty: the one route
    whose destinations are the two subsets) and the destination `host` of the subsets.
    """

    kind: str
    namespace: str
    name: str
    stable: str
    canary: str
    route: str = ""
    host: str = ""
    route_match: str = ""
    """Istio: the managed route's request matches as registered (`TargetState.route_match`)."""
    tag: str = ""
    """Knative: the traffic tag the canary carries during the rollout (empty: none)."""
    keep_tag: bool = False
    """Knative: the tag stays on the canary after the rollout's final write."""

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class TargetRequest:
    """What a pipeline names when it registers a rollout; the target fills in what is left empty.

    Knative: the Service (`name`) and optionally both revisions. Istio: the VirtualService, both
    subsets, optionally the route's name and the DestinationRule (`rule`).
    """

    kind: str
    namespace: str
    name: str
    stable: str = ""
    canary: str = ""
    route: str = ""
    rule: str = ""


@dataclass(frozen=True)
class RoutePlan:
    """How traffic should be split: the weights, plus the requests that reach the canary first."""

    weights: SetTraffic
    matches: tuple[RequestMatch, ...] = ()
    final: bool = False
    """The rollout's last write (promotion, rollback): every route it manages is taken out with it
    (a Knative tag, unless the rollout keeps it)."""


@dataclass(frozen=True)
class TrafficTarget:
    """One entry of a split: a version by name (or a floating `latest`) with its percent."""

    version: str
    percent: int
    latest: bool = False
    tag: str | None = None
    url: str = ""
    """Knative, in `status.traffic`: the tag's own URL."""


@dataclass(frozen=True)
class TargetState:
    """What the target shows of the routed object: its intended split (spec), what is live
    (status), and the newest version someone created (Knative's latest created revision)."""

    namespace: str
    name: str
    generation: int
    observed_generation: int
    resource_version: str
    spec_traffic: tuple[TrafficTarget, ...]
    status_traffic: tuple[TrafficTarget, ...]
    newest_version: str | None
    newest_ready_version: str | None
    ready: str
    """The object's Ready condition: "True", "False" or "Unknown"."""
    routes_reason: str = ""
    routes_message: str = ""
    route_match: str = ""
    """Istio: the managed route's request matches, as a canonical text (empty: it has none); a
    change from the registered one is someone else's edit."""
    own_route: str = ""
    """The match route autocanary added (its matches and destination), as a canonical text; empty
    when there is none. A router that writes a match route must show it here: the rollout keeps
    it as the proof the route is in place, and a change from it is someone else's edit."""

    @property
    def observed(self) -> bool:
        """The controller has reconciled the latest spec."""
        return self.observed_generation >= self.generation

    @property
    def tags(self) -> dict[str, str]:
        """The spec's tags: each with the revision it names."""
        return {t.tag: t.version for t in self.spec_traffic if t.tag}

    def tag_url(self, tag: str) -> str:
        """The URL the controller gives a tag (empty until it has reconciled it)."""
        return next((t.url for t in self.status_traffic if t.tag == tag and t.url), "")

    @property
    def split(self) -> dict[str, int]:
        """Live percent per revision (one revision may appear in several targets)."""
        return sum_by_version(self.status_traffic)

    def pinned(self, stable: str, canary: str) -> dict[str, int] | None:
        """The spec's split when it pins exactly these two revisions by name, else None."""
        if any(target.latest for target in self.spec_traffic):
            return None
        split = sum_by_version(self.spec_traffic)
        return split if set(split) <= {stable, canary} else None

    def is_live(self, weights: SetTraffic, stable: str, canary: str) -> bool:
        """The live split is exactly this one."""
        live = {revision: percent for revision, percent in self.split.items() if percent}
        wanted = {
            revision: percent for revision, percent in ((stable, weights.stable), (canary, weights.canary)) if percent
        }
        return self.observed and live == wanted


@dataclass(frozen=True)
class VersionState:
    """One version (a Knative revision, a subset's Deployment) and whether it can serve."""

    namespace: str
    name: str
    ready: str
    """Its Ready condition: "True", "False" or "Unknown"."""
    reason: str = ""
    message: str = ""

    @property
    def is_ready(self) -> bool:
        return self.ready == "True"


def sum_by_version(targets: tuple[TrafficTarget, ...]) -> dict[str, int]:
    split: dict[str, int] = {}
    for target in targets:
        split[target.version] = split.get(target.version, 0) + target.percent
    return split


WriteGuard = Callable[[TargetState], None]
"""Asked with every read of the write path (the first and each after a 409), before the write
conditioned on it: raises `FencedOut` when the caller lost the rollout, `ForeignChange` when
the Service is no longer as autocanary left it; returning means the write may go out."""


Observation = TargetState | None | TransientError
"""What `Target.observe` found for one rollout: the object's state, None when it is gone, or the
error that kept the target from looking (the rollout is looked at again at its next tick)."""


class Target(Protocol):
    """What is rolled out and how it is observed."""

    def get(self, namespace: str, name: str) -> TargetState:
        """The routed object; `PermanentError` when it does not exist."""
        ...

    def observe(self, refs: Sequence[TargetRef], *, fresh: bool = False) -> Mapping[TargetRef, Observation]:
        """The objects of a batch of rollouts, read in as few requests as the backend allows.

        A backend may answer from a copy a few milliseconds old (a worker's watch); `fresh` asks
        for the API server's own answer, to confirm anything the copy shows out of the ordinary."""
        ...

    def version(self, ref: TargetRef, version: str) -> VersionState:
        """Whether one version of the target can serve; `PermanentError` when it does not exist."""
        ...

    def resolve(self, request: TargetRequest) -> TargetRef:
        """Registration's checks against the cluster, with defaults filled in: `TargetNotFound`
        (404) or `ValidationError` (422), each naming the field of the kind's request body
        (`service`, `canary_revision`; `virtual_service`, `route`, `canary_subset` ...)."""
        ...


class Router(Protocol):
    """How traffic is split between the two versions of one target.

    Every write reads the object, shows what it read to `guard` (which stops the write by
    raising `FencedOut` or `ForeignChange`), and writes conditioned on that read.
    """

    @property
    def match_fields(self) -> frozenset[str]:
        """The `RequestMatch.field`s its match routes can express (empty: weights only)."""
        ...

    def set_weight(self, ref: TargetRef, weights: SetTraffic, guard: WriteGuard | None = None) -> TargetState:
        """Pin both versions with these weights; the state once the backend has taken them."""
        ...

    def set_match_route(self, ref: TargetRef, plan: RoutePlan, guard: WriteGuard | None = None) -> TargetState:
        """Send the plan's matching requests to the canary and the rest by its weights."""
        ...

    def verify(self, ref: TargetRef, plan: RoutePlan) -> bool:
        """The plan is what is live."""
        ...

    def remove_managed_routes(self, ref: TargetRef, guard: WriteGuard | None = None) -> None:
        """Take out every route this router added for the rollout (match routes, tags)."""
        ...


MetricsSource = Dialect | CustomMetrics
"""Which series measure a rollout: a built-in dialect, or a policy's own PromQL."""


class MetricsProvider(Protocol):
    """Per-version counts of a batch of versions over the window that ends at `at`."""

    def fetch(
        self, source: MetricsSource, targets: Sequence[RevisionRef], window: timedelta, at: datetime
    ) -> Mapping[RevisionRef, RevisionCounts]:
        """`source` is the policy's `metrics_source`: a built-in dialect or its own queries."""
        ...

    def fetch_windows(
        self, source: MetricsSource, windows: Mapping[int, Sequence[RevisionRef]], at: datetime
    ) -> Mapping[int, Mapping[RevisionRef, RevisionCounts]]:
        """`fetch` for several windows ending at `at` (seconds -> their versions) in one go: the
        rollouts of a batch each need the window since they were last judged."""
        ...


class Notifier(Protocol):
    """One notification backend (webhook, Slack): tells one target about one transition.

    True once the target accepted it; False when it refused or stayed away after the retries.
    It never raises: a dead target must not cost a rollout anything.
    """

    def deliver(self, target: NotificationTarget, rollout: Rollout, notify: Notify, at: datetime) -> bool: ...


class EventRecorder(Protocol):
    """Kubernetes Events on the routed object, so `kubectl describe` lists the transitions."""

    def record_event(
        self,
        namespace: str,
        name: str,
        *,
        reason: str,
        message: str,
        warning: bool,
        count: int = 1,
        first_at: datetime | None = None,
        last_at: datetime | None = None,
    ) -> None:
        """One Event; `count` > 1 stands for that many similar ones between `first_at` and `last_at`."""
        ...


@dataclass(frozen=True)
class KindBackends:
    """The target, router and event recorder that serve one target kind."""

    target: Target
    router: Router
    events: EventRecorder


@dataclass(frozen=True)
class Backends:
    """Every target kind this installation serves, each with its backends (see `adapters.factory`).

    The runner and the API look a rollout's backends up by `rollout.target.kind`, so one
    installation serves several kinds side by side; tests build one from fakes.
    """

    kinds: Mapping[str, KindBackends]

    def of(self, kind: str) -> KindBackends:
        found = self.kinds.get(kind)
        if found is None:
            known = ", ".join(sorted(self.kinds)) or "none"
            raise UnknownTargetKind(f"no backends for target kind {kind!r} (this installation serves: {known})")
        return found

    def events_of(self, kind: str) -> EventRecorder:
        return self.of(kind).events


class CommandInbox(Protocol):
    """Manual commands, durable before the API answers 202; claimed, applied and finished once."""

    def submit(self, rollout_id: str, kind: ManualActionKind, actor: str, reason: str, sent_at: float) -> str: ...

    def rollout_of(self, command_id: str) -> str | None: ...

    def claim(self, command_id: str, rollout_id: str, owner: str, lease_seconds: float, now: float) -> Command | None:
        """The command if `owner` may carry it out now (the oldest of its rollout, nobody alive on it)."""
        ...

    def release(self, command: Command, owner: str, retry_in: float, now: float) -> None: ...

    def finish(self, command: Command) -> str | None:
        """Done with it; the id of its rollout's next command, if any."""
        ...

    def beat(self, owner: str) -> None: ...


class RolloutStore(Protocol):
    """What the runner needs of the store: versioned rollouts saved with compare-and-set on version
    and fencing token, their schedule, per-rollout leases, the event log and the command inbox."""

    @property
    def commands(self) -> CommandInbox: ...

    def get(self, rollout_id: str) -> Rollout | None: ...

    def get_many(self, ids: Sequence[str]) -> list[Rollout | None]: ...

    def save(
        self,
        rollout: Rollout,
        *,
        token: int | None,
        next_tick: datetime | None,
        events: Sequence[LogEntry] = (),
        notifications: Sequence[Notification] = (),
        command: str = "",
    ) -> tuple[SaveResult, Rollout]: ...

    def save_many(self, items: Sequence[SaveItem]) -> list[tuple[SaveResult, Rollout]]: ...

    def schedule(self, rollout_id: str, at: datetime) -> None: ...

    def schedule_many(self, times: Mapping[str, datetime]) -> None:
        """`schedule` for many rollouts in one round trip."""
        ...

    def acquire_leases(self, ids: Sequence[str], owner: str, ttl_ms: int) -> dict[str, int]: ...

    def preempt(self, rollout_id: str, owner: str, ttl_ms: int) -> int: ...

    def release_leases(self, ids: Sequence[str], owner: str) -> None: ...

    def holds_token(self, rollout_id: str, token: int) -> bool: ...

    def append_events(self, rollout_id: str, events: Sequence[LogEntry]) -> None: ...

    def record_samples(self, name: str, values: Sequence[float]) -> None: ...

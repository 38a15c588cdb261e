"""In-memory stand-ins for the cluster and the metrics, behind the same interfaces as the real ones.

For tick-by-tick scenario tests of the runner: a clock that only moves when told, a Knative-like
cluster whose routes follow spec.traffic once every pinned revision is Ready, and metrics
computed from the cluster's live split and each revision's error rate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from policies import Dialect
from rollouts import PermanentError, SetTraffic, TransientError
from rollouts.counts import RevisionCounts, RevisionRef
from rollouts.ports import (
    Backends,
    KindBackends,
    Observation,
    RoutePlan,
    TargetRef,
    TargetState,
    TrafficTarget,
    VersionState,
    WriteGuard,
    sum_by_version,
)


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@dataclass
class FakeService:
    namespace: str
    name: str
    revisions: list[str]
    spec: tuple[TrafficTarget, ...]
    live: tuple[TrafficTarget, ...]
    generation: int = 1
    requests_per_second: float = 100.0


@dataclass
class FakeCluster:
    services: dict[tuple[str, str], FakeService] = field(default_factory=dict)
    ready: dict[str, bool] = field(default_factory=dict)
    error_rate: dict[str, float] = field(default_factory=dict)
    writes: list[tuple[str, int, int]] = field(default_factory=list)
    """(service, stable %, canary %) for every split autocanary wrote, in order."""
    failing_writes: int = 0
    unreachable: bool = False
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """(namespace, name, reason) of every Kubernetes Event recorded."""
    before_write: Callable[[], None] | None = None
    """Runs once between the router's read and its conditional write (a racing writer)."""

    def add(self, namespace: str, name: str, revisions: dict[str, float], rps: float = 100.0) -> None:
        """A service whose first revision serves 100 %; `revisions` maps name -> error rate."""
        for revision, rate in revisions.items():
            self.ready.setdefault(revision, True)
            self.error_rate[revision] = rate
        first = next(iter(revisions))
        target = (TrafficTarget(first, 100),)
        self.services[(namespace, name)] = FakeService(namespace, name, list(revisions), target, target, 1, rps)

    def edit(self, namespace: str, name: str, split: Mapping[str, int]) -> None:
        """Someone else changes the traffic by hand."""
        service = self.services[(namespace, name)]
        service.spec = tuple(TrafficTarget(revision, percent) for revision, percent in split.items())
        service.generation += 1
        self._route(service)

    def _route(self, service: FakeService) -> None:
        if all(self.ready.get(t.version, False) for t in service.spec if t.version):
            service.live = service.spec

    def _state(self, service: FakeService) -> TargetState:
        self._route(service)
        waiting = service.live != service.spec
        return TargetState(
            namespace=service.namespace,
            name=service.name,
            generation=service.generation,
            observed_generation=service.generation,
            resource_version=str(service.generation),
            spec_traffic=service.spec,
            status_traffic=service.live,
            newest_version=service.revisions[-1],
            newest_ready_version=next((r for r in reversed(service.revisions) if self.ready.get(r)), None),
            ready="Unknown" if waiting else "True",
            routes_reason="RevisionMissing" if waiting else "",
        )

    # --- Target ---------------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> TargetState:
        if self.unreachable:
            raise TransientError("Kubernetes API unreachable (fake)")
        found = self.services.get((namespace, name))
        if found is None:
            raise PermanentError(f'404 services.serving.knative.dev "{name}" not found')
        return self._state(found)

    def observe(self, refs: Sequence[TargetRef]) -> dict[TargetRef, Observation]:
        if self.unreachable:
            return dict.fromkeys(refs, TransientError("Kubernetes API unreachable (fake)"))
        return {ref: self._state(s) if (s := self.services.get((ref.namespace, ref.name))) else None for ref in refs}

    def version(self, namespace: str, version: str) -> VersionState:
        if version not in self.ready:
            raise PermanentError(f'404 revisions.serving.knative.dev "{version}" not found')
        return VersionState(namespace, version, "True" if self.ready[version] else "Unknown")

    def current_split(self, namespace: str, service: str) -> dict[str, int]:
        """What the tests check: the live split of a service."""
        return self.get(namespace, service).split

    # --- Router ---------------------------------------------------------------------------------

    def set_weight(self, ref: TargetRef, weights: SetTraffic, guard: WriteGuard | None = None) -> TargetState:
        if self.unreachable:
            raise TransientError("Kubernetes API unreachable (fake)")
        found = self.services.get((ref.namespace, ref.name))
        if found is None:
            raise PermanentError(f'404 services.serving.knative.dev "{ref.name}" not found')
        for _ in range(2):  # like the real router: read, guard, conditional write, re-read on 409
            read_version = found.generation
            if guard is not None:
                guard(self._state(found))
            if self.before_write is not None:
                interfere, self.before_write = self.before_write, None
                interfere()
            if found.generation == read_version:
                break
        else:
            raise TransientError(f"{ref.where}: still conflicting (fake)")
        if self.failing_writes:
            self.failing_writes -= 1
            raise TransientError("500 etcd timeout (fake)")
        found.spec = (TrafficTarget(ref.stable, weights.stable), TrafficTarget(ref.canary, weights.canary))
        found.generation += 1
        self.writes.append((ref.name, weights.stable, weights.canary))
        return self._state(found)

    def set_match_route(self, ref: TargetRef, plan: RoutePlan, guard: WriteGuard | None = None) -> TargetState:
        if plan.matches:
            raise PermanentError("match routes are not supported (fake)")
        return self.set_weight(ref, plan.weights, guard)

    def verify(self, ref: TargetRef, plan: RoutePlan) -> bool:
        return self.get(ref.namespace, ref.name).is_live(plan.weights, ref.stable, ref.canary)

    def remove_managed_routes(self, ref: TargetRef, guard: WriteGuard | None = None) -> None:
        return None

    # --- EventRecorder --------------------------------------------------------------------------

    def record_event(self, namespace: str, name: str, *, reason: str, message: str, warning: bool) -> None:
        self.events.append((namespace, name, reason))

    def backends(self) -> Backends:
        """This cluster as the backends of Knative targets, as `adapters.factory` builds the real ones."""
        return Backends({"knative": KindBackends(target=self, router=self, events=self)})


@dataclass
class FakeMetrics:
    """Counts from the cluster's live split: each revision's share of the service's request rate."""

    cluster: FakeCluster
    down: bool = False
    blind: bool = False
    """Prometheus answers but has no samples (missed scrapes): every revision comes back empty."""
    fetches: int = 0

    def fetch(
        self, dialect: Dialect, targets: Sequence[RevisionRef], window: timedelta, at: datetime
    ) -> dict[RevisionRef, RevisionCounts]:
        self.fetches += 1
        if self.down:
            raise TransientError("Prometheus unreachable at http://prometheus (fake)")
        counts: dict[RevisionRef, RevisionCounts] = {}
        for ref in targets:
            service = next(
                s for (ns, _), s in self.cluster.services.items() if ns == ref.namespace and ref.revision in s.revisions
            )
            share = sum_by_version(service.live).get(ref.revision, 0) / 100
            requests = 0 if self.blind else round(service.requests_per_second * share * window.total_seconds())
            counts[ref] = RevisionCounts.of(requests, round(requests * self.cluster.error_rate[ref.revision]))
        return counts

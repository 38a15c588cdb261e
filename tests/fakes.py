"""In-memory stand-ins for the cluster, the metrics and the store, behind the same ports as the real ones.

For tick-by-tick scenario tests of the runner: a clock that only moves when told, a Knative-like
cluster whose routes follow spec.traffic once every pinned revision is Ready, and metrics
computed from the cluster's live split and each revision's error rate.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from adapters.knative import resolve_revisions
from rollouts import PermanentError, SetTraffic, TransientError
from rollouts.counts import RevisionCounts, RevisionRef
from rollouts.errors import ActiveRolloutExists
from rollouts.log import LogEntry, Notification
from rollouts.model import ManualActionKind, Rollout
from rollouts.ports import (
    Backends,
    KindBackends,
    MetricsSource,
    Observation,
    RequestMatch,
    RoutePlan,
    TargetRef,
    TargetRequest,
    TargetState,
    TrafficTarget,
    VersionState,
    WriteGuard,
    sum_by_version,
)
from rollouts.records import Command, SaveItem, SaveResult


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
    match_target: str = ""
    """The version a match route sends its requests to ("" without one)."""


MATCH_SHARE = 0.1
"""The share of a service's requests that match a match route, in the fakes."""


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
    match_fields: frozenset[str] = frozenset()
    """What its router's match routes can express; empty: weights only, as Knative."""
    matches: list[tuple[str, tuple[RequestMatch, ...]]] = field(default_factory=list)
    """(service, matches) for every match route autocanary wrote, in order."""
    final_writes: list[str] = field(default_factory=list)
    """Services whose rollout ended with a write that takes every managed route out."""
    stale: dict[tuple[str, str], tuple[TrafficTarget, ...]] = field(default_factory=dict)
    """A worker's watched copy that lags: what it shows as a service's traffic, until read fresh."""
    fresh_reads: int = 0

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
            own_route=f"match route to {service.match_target}" if service.match_target else "",
        )

    # --- Target ---------------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> TargetState:
        if self.unreachable:
            raise TransientError("Kubernetes API unreachable (fake)")
        found = self.services.get((namespace, name))
        if found is None:
            raise PermanentError(f'404 services.serving.knative.dev "{name}" not found')
        return self._state(found)

    def observe(self, refs: Sequence[TargetRef], *, fresh: bool = False) -> dict[TargetRef, Observation]:
        if self.unreachable:
            return dict.fromkeys(refs, TransientError("Kubernetes API unreachable (fake)"))
        self.fresh_reads += len(refs) if fresh else 0
        observed: dict[TargetRef, Observation] = {}
        for ref in refs:
            service = self.services.get((ref.namespace, ref.name))
            shown = None if service is None else self._state(service)
            lagging = self.stale.get((ref.namespace, ref.name))
            if shown is not None and lagging is not None and not fresh:
                shown = replace(shown, spec_traffic=lagging, status_traffic=lagging)
            observed[ref] = shown
        return observed

    def version(self, ref: TargetRef, version: str) -> VersionState:
        if version not in self.ready:
            raise PermanentError(f'404 revisions.serving.knative.dev "{version}" not found')
        return VersionState(ref.namespace, version, "True" if self.ready[version] else "Unknown")

    def resolve(self, request: TargetRequest) -> TargetRef:
        return resolve_revisions(self, request)

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
        found.match_target = ref.canary if weights.matches else ""
        self.writes.append((ref.name, weights.stable, weights.canary))
        return self._state(found)

    def set_match_route(self, ref: TargetRef, plan: RoutePlan, guard: WriteGuard | None = None) -> TargetState:
        if plan.matches and not {m.field for m in plan.matches} <= self.match_fields:
            raise PermanentError("match routes are not supported (fake)")
        weights = plan.weights
        state = self.set_weight(ref, SetTraffic(weights.stable, weights.canary, plan.matches), guard)
        if plan.matches:
            self.matches.append((ref.name, plan.matches))
        if plan.final:
            self.final_writes.append(ref.name)
        return state

    def verify(self, ref: TargetRef, plan: RoutePlan) -> bool:
        return self.get(ref.namespace, ref.name).is_live(plan.weights, ref.stable, ref.canary)

    def remove_managed_routes(self, ref: TargetRef, guard: WriteGuard | None = None) -> None:
        return None

    # --- EventRecorder --------------------------------------------------------------------------

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
    others: tuple[FakeCluster, ...] = ()
    """More clusters measured by the same Prometheus (the fakes of other target kinds)."""

    def fetch_windows(
        self, source: MetricsSource, windows: Mapping[int, Sequence[RevisionRef]], at: datetime
    ) -> dict[int, dict[RevisionRef, RevisionCounts]]:
        self.fetches += 1
        return {w: self._counts(refs, timedelta(seconds=w)) for w, refs in windows.items()}

    def fetch(
        self, dialect: MetricsSource, targets: Sequence[RevisionRef], window: timedelta, at: datetime
    ) -> dict[RevisionRef, RevisionCounts]:
        self.fetches += 1
        return self._counts(targets, window)

    def _counts(self, targets: Sequence[RevisionRef], window: timedelta) -> dict[RevisionRef, RevisionCounts]:
        if self.down:
            raise TransientError("Prometheus unreachable at http://prometheus (fake)")
        counts: dict[RevisionRef, RevisionCounts] = {}
        for ref in targets:
            cluster, service = next(
                (c, s)
                for c in (self.cluster, *self.others)
                for (ns, name), s in c.services.items()
                if ns == ref.namespace and ref.revision in s.revisions and ref.service in ("", name)
            )
            share = sum_by_version(service.live).get(ref.revision, 0) / 100
            if service.match_target:  # the matching requests go to the match route's version
                share = share * (1 - MATCH_SHARE) + (MATCH_SHARE if ref.revision == service.match_target else 0)
            requests = 0 if self.blind else round(service.requests_per_second * share * window.total_seconds())
            counts[ref] = RevisionCounts.of(requests, round(requests * cluster.error_rate[ref.revision]))
        return counts


@dataclass
class MemoryInbox:
    """The command inbox in memory: each rollout's commands in the order they were accepted."""

    commands: dict[str, Command] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    queues: dict[str, list[str]] = field(default_factory=dict)

    def submit(self, rollout_id: str, kind: ManualActionKind, actor: str, reason: str, sent_at: float) -> str:
        command_id = uuid.uuid4().hex
        self.commands[command_id] = Command(command_id, rollout_id, kind, actor, reason, sent_at)
        self.queues.setdefault(rollout_id, []).append(command_id)
        return command_id

    def rollout_of(self, command_id: str) -> str | None:
        found = self.commands.get(command_id)
        return found.rollout_id if found else None

    def claim(self, command_id: str, rollout_id: str, owner: str, lease_seconds: float, now: float) -> Command | None:
        found = self.commands.get(command_id)
        queue = self.queues.get(rollout_id, [])
        if found is None or queue[:1] != [command_id] or self.owners.get(command_id, owner) != owner:
            return None
        self.owners[command_id] = owner
        return found

    def release(self, command: Command, owner: str, retry_in: float, now: float) -> None:
        if self.owners.get(command.id) == owner:
            del self.owners[command.id]

    def finish(self, command: Command) -> str | None:
        self.commands.pop(command.id, None)
        self.owners.pop(command.id, None)
        queue = self.queues.get(command.rollout_id, [])
        if command.id in queue:
            queue.remove(command.id)
        return queue[0] if queue else None

    def mark_applied(self, command_id: str) -> bool:
        found = self.commands.get(command_id)
        if found is None or found.applied:
            return False
        self.commands[command_id] = replace(found, applied=True)
        return True

    def beat(self, owner: str) -> None:
        return None

    def pending(self) -> int:
        return len(self.commands)


@dataclass
class MemoryStore:
    """The `RolloutStore` port in memory, with the same compare-and-set, fencing and schedule rules
    as the Redis store, for scenario tests that need no Redis. Leases expire on `clock`."""

    clock: Callable[[], datetime]
    commands: MemoryInbox = field(default_factory=MemoryInbox)
    docs: dict[str, Rollout] = field(default_factory=dict)
    active: dict[tuple[str, str, str], str] = field(default_factory=dict)
    due: dict[str, float] = field(default_factory=dict)
    fences: dict[str, int] = field(default_factory=dict)
    leases: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    log: dict[str, list[LogEntry]] = field(default_factory=dict)
    outbox: list[Notification] = field(default_factory=list)
    measured: dict[str, list[float]] = field(default_factory=dict)

    def create(self, rollout: Rollout, event: LogEntry) -> tuple[Rollout, bool]:
        key = (rollout.target_kind, rollout.namespace, rollout.service)
        if key in self.active:
            raise ActiveRolloutExists(rollout.namespace, rollout.service, self.active[key])
        stored = rollout.model_copy(update={"version": 1})
        self.docs[rollout.id], self.active[key] = stored, rollout.id
        self.due[rollout.id] = rollout.created_at.timestamp()
        self.log[rollout.id] = [event]
        return stored, True

    def get(self, rollout_id: str) -> Rollout | None:
        return self.docs.get(rollout_id)

    def get_many(self, ids: Sequence[str]) -> list[Rollout | None]:
        return [self.docs.get(rollout_id) for rollout_id in ids]

    def active_for(self, namespace: str, service: str, kind: str = "knative") -> str | None:
        return self.active.get((kind, namespace, service))

    def save(
        self,
        rollout: Rollout,
        *,
        token: int | None,
        next_tick: datetime | None,
        events: Sequence[LogEntry] = (),
        notifications: Sequence[Notification] = (),
        command: str = "",
    ) -> tuple[SaveResult, Rollout]:
        return self.save_many([SaveItem(rollout, token, next_tick, events, notifications, command)])[0]

    def save_many(self, items: Sequence[SaveItem]) -> list[tuple[SaveResult, Rollout]]:
        return [self._save_one(item) for item in items]

    def _save_one(self, item: SaveItem) -> tuple[SaveResult, Rollout]:
        rollout, token = item.rollout, item.token
        saved = rollout.model_copy(update={"version": rollout.version + 1})
        current = self.docs.get(rollout.id)
        if current is None:
            return SaveResult.MISSING, saved
        if current.version != rollout.version:
            return SaveResult.STALE_VERSION, saved
        if token is not None and self.fences.get(rollout.id, 0) != token:
            return SaveResult.STALE_TOKEN, saved
        if item.command and not self.commands.mark_applied(item.command):
            return SaveResult.STALE_COMMAND, saved
        self.docs[rollout.id] = saved
        if saved.is_terminal:
            self.due.pop(rollout.id, None)
            self.active.pop((rollout.target_kind, rollout.namespace, rollout.service), None)
        elif item.next_tick is not None:
            self.due[rollout.id] = item.next_tick.timestamp()
        self.log.setdefault(rollout.id, []).extend(item.events)
        self.outbox.extend(item.notifications)
        return SaveResult.OK, saved

    def schedule(self, rollout_id: str, at: datetime) -> None:
        if rollout_id in self.due:
            self.due[rollout_id] = at.timestamp()

    def schedule_many(self, times: Mapping[str, datetime]) -> None:
        for rollout_id, at in times.items():
            self.schedule(rollout_id, at)

    def claim_due(self, now: datetime, limit: int, claim_until: datetime) -> list[tuple[str, float]]:
        found = sorted((at, i) for i, at in self.due.items() if at <= now.timestamp())[:limit]
        for _, rollout_id in found:
            self.due[rollout_id] = claim_until.timestamp()
        return [(rollout_id, at) for at, rollout_id in found]

    def acquire_leases(self, ids: Sequence[str], owner: str, ttl_ms: int) -> dict[str, int]:
        tokens = {}
        for rollout_id in ids:
            held = self.leases.get(rollout_id)
            if held is None or held[1] <= self.clock():
                tokens[rollout_id] = self.preempt(rollout_id, owner, ttl_ms)
        return tokens

    def preempt(self, rollout_id: str, owner: str, ttl_ms: int) -> int:
        self.fences[rollout_id] = self.fences.get(rollout_id, 0) + 1
        self.leases[rollout_id] = (owner, self.clock() + timedelta(milliseconds=ttl_ms))
        return self.fences[rollout_id]

    def release_leases(self, ids: Sequence[str], owner: str) -> None:
        for rollout_id in ids:
            if self.leases.get(rollout_id, ("",))[0] == owner:
                del self.leases[rollout_id]

    def holds_token(self, rollout_id: str, token: int) -> bool:
        return self.fences.get(rollout_id) == token

    def append_events(self, rollout_id: str, events: Sequence[LogEntry]) -> None:
        self.log.setdefault(rollout_id, []).extend(events)

    def events(self, rollout_id: str) -> list[LogEntry]:
        return list(self.log.get(rollout_id, []))

    def record_samples(self, name: str, values: Sequence[float]) -> None:
        self.measured.setdefault(name, []).extend(values)

    def samples(self, name: str) -> list[float]:
        return list(reversed(self.measured.get(name, [])))

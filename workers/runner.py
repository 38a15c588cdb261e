"""The runner: for a batch of rollouts, observe, judge, decide, save, act, in that order.

One tick of a batch:

1. take a lease on each rollout (a fencing token that grows with every take); skip those held;
2. load them (one pipelined read) and observe their targets: from the worker's watched copy, or
   one batched read per target kind (for Knative, one LIST of Services per busy namespace); what
   would end or supersede a rollout is read again from the API server; and the canary's
   readiness while initializing;
3. read the metrics of every rollout that is being judged, in one batched fetch per dialect (two
   Prometheus queries, each covering every window the batch's rollouts need), and fold them into
   each rollout's statistics;
4. let the pure engine decide (`rollouts.engine.handle`);
5. save every decision with compare-and-set on version and token: a rollout someone else saved
   or took over meanwhile is dropped here, before anything reaches Kubernetes; its events and
   notifications are written in the same atomic step (the outbox, delivered by the relay in
   `workers.notify`, so a worker killed after saving loses no notification);
6. carry out the traffic action each decision returned through the rollout's router, whose
   guard re-checks the token between its read and its conditional write; confirm final writes
   (`TrafficApplied`) and save again.

What the observations mean is decided by the pure rules of `rollouts.causes` (superseded
detection, readiness, window sizing, the idle next tick, what a decision logs); the runner keeps
the I/O and its order. Manual commands (`control`) preempt whoever holds the rollout: a new
token fences the old holder out of Redis and Kubernetes alike.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TypeVar, cast

from analyzer.verdict import AnalysisState, error_verdict, judge
from rollouts import causes, engine
from rollouts.actions import Promote, SetTraffic
from rollouts.counts import RevisionCounts, RevisionRef
from rollouts.errors import FencedOut, ForeignChange, InvalidTransition, PermanentError, TransientError
from rollouts.events import (
    CanaryNotReady,
    Failed,
    RollbackRequired,
    Superseded,
    Tick,
    TrafficApplied,
)
from rollouts.events import (
    Event as EngineEvent,
)
from rollouts.model import Rollout
from rollouts.phase import Phase
from rollouts.ports import Backends, MetricsProvider, MetricsSource, Observation, RolloutStore, RoutePlan, TargetState
from rollouts.records import SaveItem, SaveResult
from workers.manual import ManualCommands
from workers.report import TickReport

log = logging.getLogger("autocanary.runner")
T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Runner(ManualCommands):
    def __init__(
        self,
        store: RolloutStore,
        backends: Backends,
        metrics: MetricsProvider,
        *,
        owner: str,
        lease_ms: int = 30_000,
        metrics_lag: timedelta = timedelta(seconds=1),
        min_window: timedelta = timedelta(seconds=1),
        write_concurrency: int = 16,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.backends = backends
        self.metrics = metrics
        self.owner = owner
        self.lease_ms = lease_ms
        self.metrics_lag = metrics_lag
        self.min_window = max(1, int(min_window.total_seconds()))
        self.write_concurrency = write_concurrency
        self.clock = clock

    # --- ticks ---------------------------------------------------------------------------------

    def tick(self, ids: Sequence[str], due: Mapping[str, float] | None = None) -> TickReport:
        """One tick for a batch of rollout ids (`due`: when each was due, for lateness)."""
        report = TickReport()
        with report.timed("leases"):
            tokens = self.store.acquire_leases(list(dict.fromkeys(ids)), self.owner, self.lease_ms)
        report.leased = len(tokens)
        held = [rollout_id for rollout_id in ids if rollout_id not in tokens]
        if held:
            # Another worker is still on these (e.g. it scheduled an immediate follow-up while
            # holding them): look again in a second rather than when the scheduler's claim runs out.
            soon = self.clock() + timedelta(seconds=1)
            self.store.schedule_many(dict.fromkeys(held, soon))
        if not tokens:
            return report
        try:
            now = self.clock()
            report.lateness = [max(0.0, now.timestamp() - due[i]) for i in tokens if due and i in due]
            with report.timed("load"):
                loaded = [r for r in self.store.get_many(list(tokens)) if r is not None and not r.is_terminal]
            with report.timed("observe"):
                targets = self._targets(loaded)
            observed = self._observe(loaded, targets, now, report)
            self._decide_and_act(observed, tokens, now, report)
            self.store.record_samples("lateness", report.lateness)
        finally:
            self.store.release_leases(list(tokens), self.owner)
        return report

    def _targets(self, rollouts: list[Rollout]) -> dict[str, Observation]:
        """What each rollout's target shows: one batched read per target kind."""
        by_kind: dict[str, list[Rollout]] = defaultdict(list)
        for rollout in rollouts:
            by_kind[rollout.target.kind].append(rollout)
        observed: dict[str, Observation] = {}
        for kind, members in by_kind.items():
            target = self.backends.of(kind).target
            refs = [r.target for r in members]  # built once: a property that makes a new TargetRef
            try:
                found = dict(target.observe(refs))
                # A copy may be milliseconds old: what it shows out of the ordinary is read again.
                unusual = [ref for r, ref in zip(members, refs, strict=True) if _unusual(r, found.get(ref))]
                if unusual:
                    found.update(target.observe(unusual, fresh=True))
            except TransientError as exc:
                found = dict.fromkeys(refs, exc)
            observed.update((r.id, found.get(ref)) for r, ref in zip(members, refs, strict=True))
        return observed

    def _observe(
        self,
        rollouts: list[Rollout],
        targets: Mapping[str, Observation],
        now: datetime,
        report: TickReport,
    ) -> list[tuple[Rollout, EngineEvent | None]]:
        """The event each rollout's tick is about (None: nothing to decide this time)."""
        observed: list[tuple[Rollout, EngineEvent | None]] = []
        judged: list[Rollout] = []
        reachable = [r for r in rollouts if not isinstance(targets.get(r.id), TransientError)]
        for rollout in rollouts:
            state = targets.get(rollout.id)
            if isinstance(state, TransientError):
                observed.append((rollout, self._unavailable(rollout, str(state))))
        # An initializing rollout's event needs its canary's readiness, one read each: side by side.
        with report.timed("readiness"):
            events = self._in_parallel(
                lambda r: self._cluster_event(r, cast(TargetState | None, targets.get(r.id))), reachable
            )
        for rollout, event in zip(reachable, events, strict=True):
            if event is not None or rollout.phase not in (Phase.PROGRESSING, Phase.PAUSED):
                observed.append((rollout, event))
            elif rollout.step_started_at is None:
                observed.append((rollout, Tick(causes.NOT_STARTED)))
            else:
                judged.append(rollout)
        with report.timed("metrics"):
            observed.extend(self._judge(judged, now, report))
        return observed

    def _in_parallel(self, work: Callable[[Rollout], T], rollouts: list[Rollout]) -> list[T]:
        """`work` for each rollout, those that read the cluster (initializing ones) on a pool."""
        reading = [r for r in rollouts if r.phase is Phase.INITIALIZING]
        if len(reading) <= 1:
            return [work(r) for r in rollouts]
        with ThreadPoolExecutor(min(self.write_concurrency, len(reading))) as pool:
            started = {r.id: pool.submit(work, r) for r in reading}
            return [started[r.id].result() if r.id in started else work(r) for r in rollouts]

    def _unavailable(self, rollout: Rollout, message: str) -> EngineEvent | None:
        if rollout.phase in (Phase.PROGRESSING, Phase.PAUSED):
            return Tick(error_verdict(f"Kubernetes API: {message}"))
        return None  # retried at the next tick; nothing else to decide

    def _cluster_event(self, rollout: Rollout, state: TargetState | None) -> EngineEvent | None:
        """What the cluster says about this rollout before any metric is read (`rollouts.causes`)."""
        event = causes.cluster_event(rollout, state)
        if event is not None or state is None or rollout.phase is not Phase.INITIALIZING:
            return event
        try:
            canary = self.backends.of(rollout.target.kind).target.version(rollout.target, rollout.canary_revision)
        except PermanentError as exc:
            return RollbackRequired(f"canary revision {rollout.canary_revision} is gone: {exc}")
        except TransientError as exc:
            return CanaryNotReady(f"cannot read the revision: {exc}")
        return causes.readiness(rollout, state, canary)

    def _judge(
        self, rollouts: list[Rollout], now: datetime, report: TickReport
    ) -> list[tuple[Rollout, EngineEvent | None]]:
        """One batched fetch per dialect (or policy's own queries) for every rollout being judged,
        each rollout over the window since it was last judged."""
        at = (now - self.metrics_lag).replace(microsecond=0)
        groups: dict[MetricsSource, dict[int, list[Rollout]]] = defaultdict(lambda: defaultdict(list))
        observed: list[tuple[Rollout, EngineEvent | None]] = []
        for rollout in rollouts:
            window = causes.judging_window(rollout, at, self.min_window)
            if window is None:
                observed.append((rollout, None))
                continue
            groups[rollout.policy.metrics_source][window].append(rollout)
        for source, windows in groups.items():
            members = [r for group in windows.values() for r in group]
            report.metric_fetches += 1
            try:
                fetched = self.metrics.fetch_windows(
                    source, {w: [ref for r in group for ref in _refs(r)] for w, group in windows.items()}, at
                )
            except TransientError as exc:
                observed.extend((r, Tick(error_verdict(str(exc)))) for r in members)
                continue
            except PermanentError as exc:
                observed.extend((r, RollbackRequired(f"metrics query refused: {exc}")) for r in members)
                continue
            for window, group in windows.items():
                observed.extend(self._judged(r, fetched[window], window, at) for r in group)
        return observed

    def _judged(
        self, rollout: Rollout, counts: Mapping[RevisionRef, RevisionCounts], window: int, at: datetime
    ) -> tuple[Rollout, EngineEvent | None]:
        canary, stable = _refs(rollout)
        empty = causes.empty_window(rollout, counts[canary].requests, counts[stable].requests, window)
        if empty is causes.EmptyWindow.GAP:  # not judged; the next window starts now
            return rollout.with_analyzed(at, rollout.analysis_state), Tick(causes.GAP_AFTER_OUTAGE)
        if empty is causes.EmptyWindow.WIDEN:
            return rollout, None
        judgement = judge(rollout.policy, AnalysisState.load(rollout.analysis_state), counts[canary], counts[stable])
        return rollout.with_analyzed(at, judgement.state.dump()), Tick(judgement.verdict)

    # --- decide, save, act ---------------------------------------------------------------------

    def _decide_and_act(
        self,
        observed: list[tuple[Rollout, EngineEvent | None]],
        tokens: Mapping[str, int],
        now: datetime,
        report: TickReport,
    ) -> None:
        decided: list[SaveItem] = []
        planned: dict[str, causes.TrafficAction | None] = {}
        idle: list[Rollout] = []
        for rollout, event in observed:
            if event is None:
                idle.append(rollout)
                continue
            try:
                decision = engine.handle(rollout, event, now)
            except InvalidTransition as exc:  # a stale message about a rollout that moved on
                log.warning("%s: %s", rollout.id, exc)
                continue
            events = causes.log_entries(rollout, event, decision, now)
            notifications = causes.notifications(decision.actions, now)
            decided.append(
                SaveItem(decision.rollout, tokens[rollout.id], decision.next_tick or now, events, notifications)
            )
            planned[rollout.id] = causes.traffic_action(decision.actions)
        survivors = list(idle)
        with report.timed("save"):
            saved = self.store.save_many(decided)
        for result, rollout in saved:
            if result is SaveResult.OK:
                survivors.append(rollout)
                report.decided += 1
            else:
                report.count(dropped=1)
                log.info("%s: %s, dropping this tick's result", rollout.id, result.value)
        # Each write waits for the Knative controller to observe it; a batch's writes are
        # independent (each behind its own fencing guard), so they go out together.
        # The write each decision asked for; a rollout without one may still lack an earlier write.
        writes = [(r, action) for r in survivors if (action := planned.get(r.id) or causes.write_needed(r))]

        def carry_out(write: tuple[Rollout, causes.TrafficAction]) -> Rollout:
            return self._carry_out(write[0], write[1], tokens[write[0].id], report)

        with report.timed("writes"):
            if len(writes) == 1:
                carry_out(writes[0])
            elif writes:
                with ThreadPoolExecutor(min(self.write_concurrency, len(writes))) as pool:
                    list(pool.map(carry_out, writes))
        # Nothing to decide now: look again when there is (the claim would wait longer).
        self.store.schedule_many(
            {
                rollout.id: causes.idle_next_tick(rollout, now, self.min_window, self.metrics_lag)
                for rollout in idle
                if engine.pending_write(rollout) is None
            }
        )

    def _carry_out(self, rollout: Rollout, action: causes.TrafficAction, token: int, report: TickReport) -> Rollout:
        """Carry out the engine's traffic action on the saved rollout.

        A step's weight is recorded as applied once the router confirms it; a final write
        (promotion, rollback) is confirmed with `TrafficApplied`. A write that failed for now is
        repeated at the next tick (`causes.write_needed`).
        """
        try:
            if isinstance(action, SetTraffic):
                written = self._write(rollout, token, action, report)
                return self._record_applied(rollout, token, action, written)
            split = SetTraffic(stable=0, canary=100) if isinstance(action, Promote) else SetTraffic(100, 0)
            self._write(rollout, token, split, report, final=True)
            return self._confirm(rollout.with_applied(split.canary), token)
        except FencedOut as exc:
            report.count(dropped=1)
            log.info("%s: %s", rollout.id, exc)
        except TransientError as exc:
            log.warning("%s: traffic not written yet, retried next tick: %s", rollout.id, exc)
        except ForeignChange as exc:
            return self._conclude(rollout, token, Superseded(exc.what))
        except PermanentError as exc:
            return self._fail(rollout, token, f"cannot write traffic: {exc}")
        return rollout

    def _write(
        self, rollout: Rollout, token: int, weights: SetTraffic, report: TickReport, *, final: bool = False
    ) -> TargetState:
        def guard(state: TargetState) -> None:
            if not self.store.holds_token(rollout.id, token):
                raise FencedOut(f"{rollout.namespace}/{rollout.service}: another worker owns this rollout now")
            change = causes.foreign_change(rollout, state) if causes.watches_foreign_changes(rollout) else None
            if change:
                raise ForeignChange(change)

        router = self.backends.of(rollout.target.kind).router
        if weights.matches or final:  # a match step's route, or the last write that takes every route out
            plan = RoutePlan(SetTraffic(weights.stable, weights.canary), weights.matches, final=final)
            written = router.set_match_route(rollout.target, plan, guard=guard)
        else:
            written = router.set_weight(rollout.target, weights, guard=guard)
        report.count(writes=1)
        return written

    def _record_applied(self, rollout: Rollout, token: int, written: SetTraffic, state: TargetState) -> Rollout:
        tag = rollout.target.tag
        applied = rollout.with_applied(
            written.canary,
            route=state.own_route if written.matches else "",
            canary_url=state.tag_url(tag) if tag else None,
        )
        result, saved = self.store.save(applied, token=token, next_tick=None)
        return saved if result is SaveResult.OK else rollout

    def _confirm(self, rollout: Rollout, token: int) -> Rollout:
        return self._conclude(rollout, token, TrafficApplied())

    def _fail(self, rollout: Rollout, token: int, message: str) -> Rollout:
        return self._conclude(rollout, token, Failed(message))

    def _conclude(self, rollout: Rollout, token: int, event: TrafficApplied | Failed | Superseded) -> Rollout:
        now = self.clock()
        decision = engine.handle(rollout, event, now)
        events = causes.log_entries(rollout, event, decision, now)
        result, saved = self.store.save(
            decision.rollout,
            token=token,
            next_tick=None,
            events=events,
            notifications=causes.notifications(decision.actions, now),
        )
        return saved if result is SaveResult.OK else rollout


def _unusual(rollout: Rollout, state: Observation) -> bool:
    """The observation would make the tick conclude something (gone, superseded) rather than go on."""
    if isinstance(state, TransientError) or rollout.phase is Phase.PENDING:
        return False
    return causes.cluster_event(rollout, state) is not None


def _refs(rollout: Rollout) -> tuple[RevisionRef, RevisionRef]:
    """The canary's and the stable's metrics keys (an Istio version also names its service: the
    host's for an Istio canary, the Knative Service for a revision measured by Istio)."""
    service = rollout.target.host.split(".", 1)[0] if rollout.target.host else rollout.service
    return RevisionRef(rollout.namespace, rollout.canary_revision, service), RevisionRef(
        rollout.namespace, rollout.stable_revision, service
    )

"""Telling people about rollout transitions: each target through the `Notifier` of its kind
(`adapters/notifiers`: generic webhooks, HMAC-signed JSON; Slack), and Kubernetes Events on the
routed object (so `kubectl describe ksvc` shows them); the outbox relay that delivers them.

Routine progress Events (started, step advanced) are rate-limited and combined as client-go's
are (`workers.event_budget`); warnings and final Events always go out at once.

Targets come from the rollout's policy (`notifications`) and a global default
(`AUTOCANARY_NOTIFY_WEBHOOK_URL`, `AUTOCANARY_NOTIFY_SLACK_URL`). Delivery runs on a small
thread pool with a timeout and bounded retries with backoff; it never blocks or fails a rollout:
a dead webhook costs a log line, not a tick. Secrets are never in policies, only the name of the
environment variable holding them (`secret_env`, always `AUTOCANARY_NOTIFY_SECRET_...`), and a
rollout's own targets reach only the hosts the installation allows (`policies.egress`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from adapters.factory import notifiers
from adapters.notifiers.http import HttpPoster
from adapters.redis_store import RolloutStore
from policies import EgressRules, NotificationEvent, NotificationTarget, Resolve
from rollouts.actions import Notify
from rollouts.errors import TransientError
from rollouts.model import Rollout
from rollouts.ports import EventRecorder
from rollouts.records import QueuedNotification
from workers.event_budget import EventBudget, RoutineEvent, RoutineEvents

log = logging.getLogger("autocanary.notify")
KUBERNETES_REASONS: dict[NotificationEvent, str] = {
    NotificationEvent.STARTED: "CanaryStarted",
    NotificationEvent.STEP_ADVANCED: "CanaryStepAdvanced",
    NotificationEvent.PAUSED: "CanaryPaused",
    NotificationEvent.RESUMED: "CanaryResumed",
    NotificationEvent.PROMOTED: "CanaryPromoted",
    NotificationEvent.ROLLED_BACK: "CanaryRolledBack",
    NotificationEvent.ABORTED: "CanaryAborted",
    NotificationEvent.SUPERSEDED: "CanarySuperseded",
    NotificationEvent.FAILED: "CanaryFailed",
}
"""The Kubernetes Event `reason` of each transition (CamelCase, as Kubernetes reasons are)."""

WARNINGS = frozenset(
    {NotificationEvent.ROLLED_BACK, NotificationEvent.ABORTED, NotificationEvent.SUPERSEDED, NotificationEvent.FAILED}
)
ROUTINE = frozenset({NotificationEvent.STARTED, NotificationEvent.STEP_ADVANCED})
"""Progress Events that pass the relay's event budget (`workers.event_budget`); the others go out at once."""


def event_message(rollout: Rollout, notify: Notify) -> str:
    """The Event's message: which rollout, which canary, what happened."""
    return f"rollout {rollout.id} ({rollout.canary_revision}, {rollout.canary_weight} %): {notify.message}"


class NotificationDispatcher:
    """Tells every interested target about a transition, each through the backend of its kind,
    from a small thread pool; and records it as a Kubernetes Event on the routed object."""

    def __init__(
        self,
        defaults: Sequence[NotificationTarget] = (),
        secrets: Mapping[str, str] | None = None,
        *,
        client: httpx.Client | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        timeout: float = 3.0,
        workers: int = 4,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        events: Callable[[str], EventRecorder] | None = None,
        events_per_second: float = 20.0,
        events_burst: int = 100,
        egress: EgressRules | None = None,
        resolve: Resolve = lambda host: (),
    ) -> None:
        self.defaults = tuple(defaults)
        self.egress = egress or EgressRules()
        self.resolve = resolve
        self.events = events
        poster = HttpPoster(client or httpx.Client(timeout=timeout), retries=retries, backoff=backoff, sleep=sleep)
        self.backends = notifiers(poster, dict(secrets or {}))
        self.clock = clock
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="notify")
        self.routine = (
            RoutineEvents(self._record_routine, EventBudget(events_per_second, events_burst, now=time.monotonic()))
            if events is not None
            else None
        )

    def send(self, rollout: Rollout, notify: Notify, at: datetime | None = None) -> list[Future[bool]]:
        """Queue the notification for every interested target; returns at once."""
        targets = [
            t for t in (*rollout.policy.notifications, *self.defaults) if t.events is None or notify.event in t.events
        ]
        at = at or self.clock()
        futures = [self._pool.submit(self._deliver, target, rollout, notify, at) for target in targets]
        if self.routine is not None and notify.event in ROUTINE:
            reason, message = KUBERNETES_REASONS[notify.event], event_message(rollout, notify)
            target = rollout.target
            self.routine.offer(RoutineEvent(target.kind, target.namespace, target.name, reason, message, at, at))
        elif self.events is not None:
            recorder = self.events(rollout.target.kind)  # the recorder of the rollout's target kind
            futures.append(self._pool.submit(self._record, recorder, rollout, notify))
        return futures

    def _record_routine(self, event: RoutineEvent) -> None:
        if self.events is None:  # the budget is only built with a recorder
            return
        self.events(event.kind).record_event(
            event.namespace,
            event.name,
            reason=event.reason,
            message=event.message,
            warning=False,
            count=event.count,
            first_at=event.first_at,
            last_at=event.last_at,
        )

    def _record(self, events: EventRecorder, rollout: Rollout, notify: Notify) -> bool:
        """One Kubernetes Event on the Service; a failure is logged, never raised (once, no retry)."""
        try:
            events.record_event(
                rollout.namespace,
                rollout.target.name,
                reason=KUBERNETES_REASONS[notify.event],
                message=event_message(rollout, notify),
                warning=notify.event in WARNINGS,
            )
        except Exception as exc:  # the Service may be gone, RBAC missing, the API down: never the rollout's problem
            log.warning("could not record the %s event for %s: %s", notify.event.value, rollout.id, exc)
            return False
        return True

    def _refused(self, target: NotificationTarget) -> str | None:
        """Checked again before each delivery: an allowed host that now resolves to a private address.

        Targets on hosts outside the allowed list can only come from the installation's own
        policies (the API refuses them in a rollout's overrides), so they are not checked here.
        """
        host = urlsplit(target.url).hostname or ""
        if target in self.defaults or not self.egress.host_allowed(host):
            return None
        return self.egress.problem(target.url, self.resolve)

    def _deliver(self, target: NotificationTarget, rollout: Rollout, notify: Notify, at: datetime) -> bool:
        refused = self._refused(target)
        if refused:
            log.warning("not notifying %s of %s for %s: %s", target.url, notify.event.value, rollout.id, refused)
            return False
        return self.backends[target.kind].deliver(target, rollout, notify, at)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class OutboxRelay:
    """Delivers the outbox: every notification a saved decision queued, at least once, across crashes.

    Each `autocanary worker` forks one into a process of its own. Relays share a Redis consumer group, so a notification
    goes to one of them; it is acknowledged once every target has answered or been given up on
    (the notifiers' bounded retries). A notification a dead relay had taken is taken over by another
    after `reclaim_idle_ms`, so a worker killed mid-delivery costs a late (possibly repeated)
    notification, never a lost one. Delivery never touches a rollout: ticks do not wait for it.
    """

    def __init__(
        self,
        store: RolloutStore,
        notifier: NotificationDispatcher,
        consumer: str,
        *,
        batch: int = 16,
        block_ms: int = 1000,
        reclaim_idle_ms: int = 30_000,
        delivery_timeout: float = 60.0,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.consumer = consumer
        self.batch = batch
        self.block_ms = block_ms
        self.reclaim_idle_ms = reclaim_idle_ms
        self.delivery_timeout = delivery_timeout

    def run_once(self) -> int:
        """Deliver one batch (waiting up to `block_ms` for one); returns how many were acknowledged.

        A rollout's notifications go out one after another, in the order they were decided (a receiver
        never hears "rolled back" before "started"); different rollouts' go out side by side.
        """
        messages = self.store.outbox_read(self.consumer, self.batch, self.block_ms, self.reclaim_idle_ms)
        by_rollout: dict[str, list[QueuedNotification]] = {}
        for message in messages:
            by_rollout.setdefault(message.rollout.id, []).append(message)
            if message.deliveries > 1:
                log.info(
                    "re-delivering %s of %s (a relay stopped before it finished)",
                    message.notification.event,
                    message.rollout.id,
                )
        deadline = time.monotonic() + self.delivery_timeout
        finished: list[str] = []
        lock = threading.Lock()

        def deliver_in_order(group: list[QueuedNotification]) -> None:
            for message in group:
                notify = Notify(NotificationEvent(message.notification.event), message.notification.message)
                futures = self.notifier.send(message.rollout, notify, message.notification.at)
                _, pending = wait(futures, timeout=max(0.0, deadline - time.monotonic()))
                if pending:
                    return  # too slow: it and the rest of this rollout's stay pending, taken over later
                with lock:
                    finished.append(message.id)

        if by_rollout:
            with ThreadPoolExecutor(min(len(by_rollout), 8), thread_name_prefix="relay") as pool:
                list(pool.map(deliver_in_order, by_rollout.values()))
        self.store.outbox_ack(finished)
        return len(finished)

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except TransientError as exc:  # Redis away: try again shortly, nothing is lost
                log.warning("outbox relay: %s", exc)
                stop.wait(1.0)

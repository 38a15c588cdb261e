"""Telling people about rollout transitions: generic webhooks (HMAC-signed JSON), Slack, and
Kubernetes Events on the Knative Service (so `kubectl describe ksvc` shows them).

Targets come from the rollout's policy (`notifications`) and a global default
(`AUTOCANARY_NOTIFY_WEBHOOK_URL`, `AUTOCANARY_NOTIFY_SLACK_URL`). Delivery runs on a small
thread pool with a timeout and bounded retries with backoff; it never blocks or fails a rollout:
a dead webhook costs a log line, not a tick. Secrets are never in policies, only the name of the
environment variable holding them (`secret_env`, always `AUTOCANARY_NOTIFY_SECRET_...`), and a
rollout's own targets reach only the hosts the installation allows (`policies.egress`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from tenacity import RetryCallState

from adapters import retry
from adapters.redis_store import RolloutStore
from policies import EgressRules, NotificationEvent, NotificationKind, NotificationTarget, Resolve
from rollouts.actions import Notify
from rollouts.errors import TransientError
from rollouts.model import Rollout
from rollouts.ports import EventRecorder
from rollouts.records import QueuedNotification

log = logging.getLogger("autocanary.notify")
SIGNATURE_HEADER = "X-Autocanary-Signature"
_EMOJI = {
    "promoted": ":white_check_mark:",
    "rolled_back": ":rotating_light:",
    "aborted": ":octagonal_sign:",
    "failed": ":x:",
    "superseded": ":twisted_rightwards_arrows:",
}


def payload(rollout: Rollout, notify: Notify, at: datetime) -> dict[str, Any]:
    """The generic webhook body."""
    return {
        "event": notify.event.value,
        "message": notify.message,
        "at": at.isoformat(),
        "rollout": {
            "id": rollout.id,
            "namespace": rollout.namespace,
            "service": rollout.service,
            "stable_revision": rollout.stable_revision,
            "canary_revision": rollout.canary_revision,
            "phase": rollout.phase.value,
            "canary_weight": rollout.canary_weight,
            "reason": rollout.reason,
            "labels": rollout.labels,
        },
    }


def slack_message(rollout: Rollout, notify: Notify) -> dict[str, Any]:
    emoji = _EMOJI.get(notify.event.value, ":information_source:")
    title = notify.event.value.replace("_", " ")
    return {
        "text": f"{emoji} *{title}* {rollout.namespace}/{rollout.service} ({rollout.canary_revision}): {notify.message}"
    }


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


def _outcome(state: RetryCallState) -> str:
    """What the last attempt got: an error's type or an answer's status."""
    if state.outcome is None:
        return "nothing yet"
    error = state.outcome.exception()
    return type(error).__name__ if error else str(state.outcome.result().status_code)


def event_message(rollout: Rollout, notify: Notify) -> str:
    """The Event's message: which rollout, which canary, what happened."""
    return f"rollout {rollout.id} ({rollout.canary_revision}, {rollout.canary_weight} %): {notify.message}"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Notifier:
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
        egress: EgressRules | None = None,
        resolve: Resolve = lambda host: (),
    ) -> None:
        self.defaults = tuple(defaults)
        self.egress = egress or EgressRules()
        self.resolve = resolve
        self.events = events
        self.secrets = dict(secrets or {})
        self.client = client or httpx.Client(timeout=timeout)
        self.retries = retries
        self.backoff = backoff
        self.sleep = sleep
        self.clock = clock
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="notify")

    def send(self, rollout: Rollout, notify: Notify, at: datetime | None = None) -> list[Future[bool]]:
        """Queue the notification for every interested target; returns at once."""
        targets = [
            t for t in (*rollout.policy.notifications, *self.defaults) if t.events is None or notify.event in t.events
        ]
        at = at or self.clock()
        futures = [self._pool.submit(self._deliver, target, rollout, notify, at) for target in targets]
        if self.events is not None:
            recorder = self.events(rollout.target.kind)  # the recorder of the rollout's target kind
            futures.append(self._pool.submit(self._record, recorder, rollout, notify))
        return futures

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
        if target.kind is NotificationKind.SLACK:
            body = json.dumps(slack_message(rollout, notify)).encode()
            headers = {"Content-Type": "application/json"}
        else:
            body = json.dumps(payload(rollout, notify, at), separators=(",", ":")).encode()
            headers = {"Content-Type": "application/json", "X-Autocanary-Event": notify.event.value}
            secret = self.secrets.get(target.secret_env or "")
            if secret:
                headers[SIGNATURE_HEADER] = sign(secret, body)
        attempts = retry.deliveries(
            self.retries,
            self.backoff,
            failed=lambda answer: answer.status_code >= 500 or answer.status_code == 429,
            transient=httpx.HTTPError,
            sleep=self.sleep,
            before_sleep=lambda state: log.info(
                "%s unreachable or busy (%s), attempt %d", target.url, _outcome(state), state.attempt_number
            ),
        )
        try:
            answer = attempts(self.client.post, target.url, content=body, headers=headers)
        except httpx.HTTPError:
            answer = None
        if answer is None or answer.status_code >= 500 or answer.status_code == 429:
            log.warning("gave up notifying %s of %s for %s", target.url, notify.event.value, rollout.id)
            return False
        if answer.status_code >= 400:
            log.warning("%s refused %s for %s: %s", target.url, notify.event.value, rollout.id, answer.status_code)
        return answer.status_code < 400

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class OutboxRelay:
    """Delivers the outbox: every notification a saved decision queued, at least once, across crashes.

    Each `autocanary worker` forks one into a process of its own. Relays share a Redis consumer group, so a notification
    goes to one of them; it is acknowledged once every target has answered or been given up on
    (the `Notifier`'s bounded retries). A notification a dead relay had taken is taken over by another
    after `reclaim_idle_ms`, so a worker killed mid-delivery costs a late (possibly repeated)
    notification, never a lost one. Delivery never touches a rollout: ticks do not wait for it.
    """

    def __init__(
        self,
        store: RolloutStore,
        notifier: Notifier,
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

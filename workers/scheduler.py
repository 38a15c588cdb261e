"""The scheduler: moves due rollouts to the `ticks` queue in batches, one active instance at a time.

Several schedulers may run (for availability); a Redis lease elects the active one, and the
others wait to take over when its lease lapses. Each round claims the due rollouts (pushing
their due time `claim_seconds` ahead, so they are not sent twice) and sends them in batches of
`batch_size`, unless `max_queued_batches` batches already wait for a worker (then they wait in
the schedule and go out later, in larger batches). A batch that is never ticked comes due again
when the claim runs out, and one the broker failed to take is due again at once. The active
scheduler also sends again the manual commands nobody carried out (`adapters.redis_store.commands`),
and deletes rollouts that ended longer ago than the retention, a bounded number at a time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from celery import Celery

from adapters.redis_store import RolloutStore
from rollouts.errors import TransientError

log = logging.getLogger("autocanary.scheduler")

PRUNE_BATCH = 1000
"""Most ended rollouts deleted in one scheduler round, so a first prune of a big backlog stays short."""

Send = Callable[[list[str], dict[str, float]], None]
Resend = Callable[[str], None]
"""Sends a stored command's id to the `control` queue again."""
Backlog = Callable[[], int]
"""Tick batches sent and not yet taken by a worker (the `ticks` queue's length)."""


class Scheduler:
    def __init__(
        self,
        store: RolloutStore,
        send: Send,
        *,
        owner: str,
        resend: Resend | None = None,
        batch_size: int = 500,
        claim: timedelta = timedelta(seconds=15),
        poll_seconds: float = 0.5,
        max_per_round: int = 5000,
        retention: timedelta | None = None,
        prune_every: timedelta = timedelta(minutes=10),
        backlog: Backlog | None = None,
        max_queued_batches: int = 4,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.send = send
        self.resend = resend
        self.owner = owner
        self.batch_size = batch_size
        self.claim = claim
        self.poll_seconds = poll_seconds
        self.max_per_round = max_per_round
        self.retention = retention
        self.prune_every = prune_every
        self.backlog = backlog
        self.max_queued_batches = max_queued_batches
        self.clock = clock
        self._pruned_at: datetime | None = None

    def run_once(self) -> int:
        """One round: if this instance leads, send every due rollout; the number sent."""
        lease_ms = max(1000, int(self.poll_seconds * 10_000))
        if not self.store.lead("scheduler", self.owner, lease_ms):
            return 0
        now = self.clock()
        self._resend_commands(now)
        if self._workers_behind():
            self._prune(now)
            return 0
        due = self.store.claim_due(now, self.max_per_round, now + self.claim)
        batches = _batches(due, self.batch_size)
        for index, batch in enumerate(batches):
            try:
                self.send([rollout_id for rollout_id, _ in batch], dict(batch))
            except Exception as exc:  # the broker failed after the claim (any error its client raises)
                unsent = [rollout_id for rest in batches[index:] for rollout_id, _ in rest]
                log.warning("could not send %d due rollouts, due again now: %s", len(unsent), exc)
                for rollout_id in unsent:  # not left to wait out the claim
                    self.store.schedule(rollout_id, now)
                raise TransientError(f"broker: cannot send ticks: {exc}") from exc
        self._prune(now)
        return len(due)

    def _workers_behind(self) -> bool:
        """Enough batches wait for a worker already: what is due waits in the schedule instead.

        Claimed and queued, it would wait just as long, and past `claim` it would be claimed and
        sent again (the same rollouts twice in the queue, which made a 5,000-rollout start-up burst
        queue 140 batches). Left in the schedule, it goes out in the larger batches of a later
        round, when a worker is free. A broker that cannot say is not waited for.
        """
        if self.backlog is None:
            return False
        try:
            waiting = self.backlog()
        except Exception as exc:  # the broker's client's errors: send as if nothing waited
            log.warning("cannot read the ticks queue's length: %s", exc)
            return False
        return waiting >= self.max_queued_batches

    def _resend_commands(self, now: datetime) -> None:
        """Commands nobody took, or whose worker died: to the control queue again (they are durable)."""
        if self.resend is None:
            return
        for command_id in self.store.commands.redeliver(now.timestamp()):
            try:
                self.resend(command_id)
            except Exception as exc:  # the broker failed: the command comes due again by itself
                raise TransientError(f"broker: cannot send command {command_id}: {exc}") from exc

    def _prune(self, now: datetime) -> None:
        """Now and then, delete what ended longer ago than the retention (a bounded amount per round)."""
        if self.retention is None or (self._pruned_at is not None and now - self._pruned_at < self.prune_every):
            return
        deleted = self.store.prune_ended(now - self.retention, limit=PRUNE_BATCH)
        # A full batch means more may be waiting: look again next round rather than in prune_every.
        self._pruned_at = None if deleted >= PRUNE_BATCH else now
        if deleted:
            log.info("deleted %d rollouts that ended before %s", deleted, now - self.retention)

    def run_forever(self, stop: threading.Event) -> None:
        log.info("scheduler %s started", self.owner)
        while not stop.is_set():
            try:
                sent = self.run_once()
            except TransientError as exc:
                log.warning("scheduler round failed, retrying: %s", exc)
                sent = 0
            except Exception:  # never stop scheduling over one bad round: say so and go on
                log.exception("scheduler round failed unexpectedly, retrying")
                sent = 0
            if sent < self.max_per_round:
                stop.wait(self.poll_seconds)


def queued_messages(app: Celery, queue: str) -> int:
    """Messages waiting in a broker queue (the scheduler's `backlog` for `ticks`).

    Declared rather than asked passively: Redis deletes an empty list, and kombu then reports
    the queue as missing."""
    with app.connection_for_read() as connection:
        declared = connection.default_channel.queue_declare(queue)
    return int(declared.message_count)


def _batches(items: Sequence[tuple[str, float]], size: int) -> list[list[tuple[str, float]]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]

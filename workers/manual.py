"""Manual commands (abort, pause, resume, promote) carried out by a worker, once, whoever dies.

The API stores each command before it answers 202 (`adapters.redis_store.commands`); any worker
then claims it, applies it (preempting whoever holds the rollout: a new fencing token fences the
old holder out of Redis and Kubernetes alike), carries out its write and finishes it. A command
whose decision is saved but whose write did not go through is sent again and only its write is
repeated. `Runner` has these methods; they live here because they are a concept of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from enum import Enum

from rollouts import causes, engine
from rollouts.errors import FencedOut, InvalidTransition, TransientError
from rollouts.events import MANUAL_EVENTS
from rollouts.log import LogEntry
from rollouts.model import ManualActionKind, Rollout
from rollouts.ports import RolloutStore
from rollouts.records import Command, SaveResult
from workers.report import TickReport

log = logging.getLogger("autocanary.runner")

COMMAND_RETRY_SECONDS = 1.0
"""A command whose write failed for now (the cluster away, a newer owner) is sent again after this."""


class ManualCommands:
    """The manual-command half of the `Runner` (which provides these attributes and `_carry_out`)."""

    store: RolloutStore
    owner: str
    lease_ms: int
    clock: Callable[[], datetime]

    def _carry_out(self, rollout: Rollout, action: causes.TrafficAction, token: int, report: TickReport) -> Rollout:
        raise NotImplementedError

    def control(self, rollout_id: str, kind: ManualActionKind, actor: str, reason: str) -> Rollout | None:
        """Accept a command and carry it out at once (the API accepts, a worker executes, in production)."""
        command_id = self.store.commands.submit(rollout_id, kind, actor, reason, self.clock().timestamp())
        return self.execute(command_id)

    def execute(self, command_id: str) -> Rollout | None:
        """Carry out a durable command, then its rollout's next ones; the rollout as last saved.

        Safe to call for any id, any number of times, from any worker: a finished command is
        gone, a command a live worker holds is left to it, and one already applied only has its
        write repeated (the worker that applied it died before writing).
        """
        inbox = self.store.commands
        rollout_id = inbox.rollout_of(command_id)
        latest: Rollout | None = None
        next_id: str | None = command_id
        while next_id and rollout_id:
            inbox.beat(self.owner)
            command = inbox.claim(next_id, rollout_id, self.owner, self.lease_ms / 1000, self.clock().timestamp())
            if command is None:
                break
            latest, outcome = self._apply(command)
            if outcome is _CommandOutcome.RETRY:
                inbox.release(command, self.owner, COMMAND_RETRY_SECONDS, self.clock().timestamp())
                break
            if outcome is _CommandOutcome.LEFT:
                break
            if outcome is _CommandOutcome.DONE:  # a refused command took no effect to time
                self.store.record_samples(f"{command.kind.value}_latency", [self.clock().timestamp() - command.sent_at])
            next_id = inbox.finish(command)
        return latest

    def _apply(self, command: Command) -> tuple[Rollout | None, _CommandOutcome]:
        """Apply the command (unless applied already) and its write, preempting any tick in flight."""
        token = self.store.preempt(command.rollout_id, self.owner, self.lease_ms)
        try:
            rollout = self.store.get(command.rollout_id)
            if rollout is None:
                log.warning("%s: rollout gone, dropping %s by %s", command.rollout_id, command.kind, command.actor)
                return None, _CommandOutcome.REFUSED
            action: causes.TrafficAction | None = None
            if not command.applied:
                decided = self._decide_command(rollout, command, token)
                if isinstance(decided, _CommandOutcome):  # refused, or applied by a worker that took it over
                    return rollout, decided
                rollout, action = decided
            # The decision's own write, or (applied by a worker that died before writing) the one still lacking.
            action = action or causes.write_needed(rollout)
            carried = self._carry_out(rollout, action, token, TickReport()) if action else rollout
            return carried, _CommandOutcome.RETRY if causes.needs_write(carried) else _CommandOutcome.DONE
        finally:
            self.store.release_leases([command.rollout_id], self.owner)

    def _decide_command(
        self, rollout: Rollout, command: Command, token: int
    ) -> tuple[Rollout, causes.TrafficAction | None] | _CommandOutcome:
        """The command's decision, saved with it marked applied, and its write; REFUSED, or LEFT
        when applied elsewhere."""
        for _ in range(5):  # a tick that saved just before our token may have bumped the version
            now = self.clock()
            event = MANUAL_EVENTS[command.kind](command.actor, command.reason)
            try:
                decision = engine.handle(rollout, event, now)
            except InvalidTransition as exc:  # the rollout moved on since the API accepted it
                log.warning("%s %s by %s refused: %s", command.kind, rollout.id, command.actor, exc)
                refused = LogEntry("command_refused", str(exc), now, rollout.phase.value, command.actor)
                self.store.append_events(rollout.id, [refused])
                return _CommandOutcome.REFUSED
            result, saved = self.store.save(
                decision.rollout,
                token=token,
                next_tick=decision.next_tick,
                events=causes.log_entries(rollout, event, decision, now),
                notifications=causes.notifications(decision.actions, now),
                command=command.id,
            )
            if result is SaveResult.OK:
                return saved, causes.traffic_action(decision.actions)
            if result is SaveResult.STALE_TOKEN:
                raise FencedOut(f"rollout {rollout.id} was taken over by a newer command")
            if result is SaveResult.STALE_COMMAND:
                return _CommandOutcome.LEFT
            found = self.store.get(rollout.id)
            if found is None:
                return _CommandOutcome.REFUSED
            rollout = found
        raise TransientError(f"rollout {rollout.id} kept changing; try again")


class _CommandOutcome(Enum):
    DONE = "done"
    """Applied and written: finished."""
    REFUSED = "refused"
    """Not allowed in the rollout's phase any more (logged), or the rollout is gone: finished."""
    RETRY = "retry"
    """Applied, but its write did not go through yet: sent again shortly."""
    LEFT = "left"
    """Another worker applied it meanwhile and carries it on."""

"""How many routine Kubernetes Events go out, and when: client-go's rules for a controller's
Events, so 10,000 rollouts starting together do not send 20,000 Events to the API server at once.

Routine progress Events (a rollout started, a step advanced) pass two token buckets, as client-go's
`EventSourceObjectSpamFilter` and its broadcaster's rate limit do: one per routed object (a burst
of 25, then one every 5 minutes) and one for the whole process (`per_second`, with a burst). An
Event that finds no token is not dropped but waits, and the Events of one object and reason that
wait together go out as one, with their count and first and last times (client-go's aggregation:
"combined from N similar events"). Warnings and the final Events (promoted, rolled back, aborted,
superseded, failed) and the operators' pause and resume never wait: `workers.notify` sends them
directly. Waiting Events live in the relay's memory: a relay that stops loses the routine Events it
was holding back (the rollout's own log in Redis has every transition).

`EventBudget` is the decision alone (the clock is passed in); `RoutineEvents` runs it on a thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

log = logging.getLogger("autocanary.notify")

PER_OBJECT_BURST = 25
PER_OBJECT_REFILL_SECONDS = 300.0
"""client-go's defaults for one source and object: 25 Events, then one more every 5 minutes."""


EPSILON = 1e-9
"""A token that the waiting time said would be there is there (floating point)."""


@dataclass(frozen=True)
class RoutineEvent:
    """One routine Event, or several of one object and reason combined."""

    kind: str
    """The rollout's target kind (whose recorder writes the Event)."""
    namespace: str
    name: str
    reason: str
    message: str
    first_at: datetime
    last_at: datetime
    count: int = 1

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.kind, self.namespace, self.name, self.reason)

    def combined(self, later: RoutineEvent) -> RoutineEvent:
        """This one and a later one of the same object and reason, as one Event."""
        count = self.count + later.count
        return replace(
            later,
            first_at=self.first_at,
            count=count,
            message=f"{later.message} (combined from {count} similar events)",
        )


class TokenBucket:
    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, now

    def _fill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def ready(self, now: float) -> bool:
        self._fill(now)
        return self.tokens >= 1 - EPSILON

    def take(self, now: float) -> bool:
        if not self.ready(now):
            return False
        self.tokens -= 1
        return True

    def wait(self, now: float) -> float:
        """Seconds until a token."""
        self._fill(now)
        return 0.0 if self.tokens >= 1 - EPSILON else (1 - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        self._fill(now)
        return self.tokens >= self.burst


class EventBudget:
    def __init__(
        self,
        per_second: float,
        burst: int,
        *,
        object_burst: int = PER_OBJECT_BURST,
        object_refill_seconds: float = PER_OBJECT_REFILL_SECONDS,
        now: float = 0.0,
    ) -> None:
        self.shared = TokenBucket(per_second, burst, now)
        self.object_rate, self.object_burst = 1 / object_refill_seconds, object_burst
        self._objects: dict[tuple[str, str, str], TokenBucket] = {}
        self._waiting: dict[tuple[str, str, str, str], RoutineEvent] = {}
        self.combined = 0
        """Events that went out as part of another (a count above one)."""

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def offer(self, event: RoutineEvent, now: float) -> list[RoutineEvent]:
        """Take an Event in; the Events that may go out now (this one among them, or not yet)."""
        held = self._waiting.get(event.key)
        if held is not None:
            self.combined += 1
            event = held.combined(event)
        self._waiting[event.key] = event
        return self.due(now)

    def due(self, now: float) -> list[RoutineEvent]:
        """The waiting Events that have both tokens now, oldest first."""
        out: list[RoutineEvent] = []
        for key in list(self._waiting):
            own = self._object(key, now)
            if not own.ready(now):
                continue
            if not self.shared.take(now):
                break
            own.take(now)
            out.append(self._waiting.pop(key))
        if len(self._objects) > 10_000:  # a full bucket is as good as none: forget those
            self._objects = {k: b for k, b in self._objects.items() if not b.full(now)}
        return out

    def next_check(self, now: float) -> float | None:
        """Seconds until a waiting Event may go (None: none waits)."""
        if not self._waiting:
            return None
        soonest = min(self._object(key, now).wait(now) for key in self._waiting)
        return max(soonest, self.shared.wait(now))

    def _object(self, key: tuple[str, str, str, str], now: float) -> TokenBucket:
        kind, namespace, name, _ = key
        bucket = self._objects.get((kind, namespace, name))
        if bucket is None:
            bucket = self._objects[(kind, namespace, name)] = TokenBucket(self.object_rate, self.object_burst, now)
        return bucket


class RoutineEvents:
    """Runs an `EventBudget`: sends what it allows at once, and the rest from a thread as tokens come."""

    def __init__(
        self,
        send: Callable[[RoutineEvent], None],
        budget: EventBudget,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.send = send
        self.budget = budget
        self.clock = clock
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="routine-events", daemon=True)
        self._thread.start()

    def offer(self, event: RoutineEvent) -> None:
        with self._changed:
            ready = self.budget.offer(event, self.clock())
            self._changed.notify()
        self._send_all(ready)

    def _run(self) -> None:
        while True:
            with self._changed:
                wait = self.budget.next_check(self.clock())
                if wait is None or wait > 0:
                    self._changed.wait(timeout=wait)
                ready = self.budget.due(self.clock())
            self._send_all(ready)

    def _send_all(self, events: list[RoutineEvent]) -> None:
        for event in events:
            try:
                self.send(event)
            except Exception as exc:  # never the rollout's problem: say so and go on
                log.warning(
                    "could not record the %s event on %s/%s: %s", event.reason, event.namespace, event.name, exc
                )

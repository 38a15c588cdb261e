"""What a rollout's event log holds, and what its notification outbox holds, as plain values.

The engine's inputs are `rollouts.events.Event`s; what the log records about each decision is a
`LogEntry` (a verdict with its numbers, who did what by hand, each transition), and each
`Notify` action becomes a `Notification` queued with the decision that made it. Both are built by the
pure rules of `rollouts.causes` and stored by the store in the same atomic write as the rollout.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class LogEntry:
    """One entry of a rollout's event log."""

    kind: str
    message: str
    at: datetime
    phase: str
    actor: str = "autocanary"
    data: Mapping[str, Any] = field(default_factory=dict)
    id: str = ""
    """The stream id, once stored."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "message": self.message,
                "at": self.at.isoformat(),
                "phase": self.phase,
                "actor": self.actor,
                "data": dict(self.data),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_stream(cls, stream_id: str, raw: str) -> LogEntry:
        data = json.loads(raw)
        return cls(
            kind=data["kind"],
            message=data["message"],
            at=datetime.fromisoformat(data["at"]),
            phase=data["phase"],
            actor=data.get("actor", "autocanary"),
            data=data.get("data", {}),
            id=stream_id,
        )


@dataclass(frozen=True)
class Notification:
    """A transition to tell people about, queued in the outbox with the decision that made it."""

    event: str
    message: str
    at: datetime

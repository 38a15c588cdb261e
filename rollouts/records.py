"""The values the store port speaks: what a save carries and returns, a page of rollouts, and a
stored manual command. Plain and frozen, so the runner and the in-memory fake share them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from rollouts.log import LogEntry, Notification
from rollouts.model import ManualActionKind, Rollout


class SaveResult(StrEnum):
    OK = "ok"
    STALE_VERSION = "stale_version"
    """Someone saved a newer version first: reload before deciding again."""
    STALE_TOKEN = "stale_token"  # noqa: S105 (a result, not a password)
    """Someone took the rollout over (a newer lease or an abort): drop this result."""
    STALE_COMMAND = "stale_command"
    """The command this decision carries out was applied by another worker already (or is gone)."""
    MISSING = "missing"


class SaveItem(NamedTuple):
    """One rollout to compare-and-set, with what to record alongside it."""

    rollout: Rollout
    token: int | None
    next_tick: datetime | None
    events: Sequence[LogEntry] = ()
    notifications: Sequence[Notification] = ()
    command: str = ""
    """The id of the manual command this decision applies: marked applied in the same atomic write."""


@dataclass(frozen=True)
class Page:
    rollouts: list[Rollout]
    next_cursor: str | None


@dataclass(frozen=True)
class Command:
    """A manual command accepted by the API, as stored."""

    id: str
    rollout_id: str
    kind: ManualActionKind
    actor: str
    reason: str
    sent_at: float
    applied: bool = False
    """Its decision is saved (only its write may still be missing)."""


@dataclass(frozen=True)
class QueuedNotification:
    """A notification read back from the outbox, with the rollout as it was saved by that decision."""

    id: str
    notification: Notification
    rollout: Rollout
    deliveries: int = 1
    """How often it has been handed out (above 1: a relay died or timed out before acknowledging it)."""

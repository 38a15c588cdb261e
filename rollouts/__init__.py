"""The pure domain of autocanary: rollouts, their phases and the engine that decides.

No I/O here (import-linter forbids it): the clock is passed in, effects are returned as actions.
"""

from rollouts.actions import Action, Notify, Promote, Rollback, ScheduleTick, SetTraffic
from rollouts.engine import Decision, abort, decide, handle, pause, pending_write, promote_now, resume
from rollouts.errors import (
    AutocanaryError,
    FencedOut,
    ForeignChange,
    InvalidTransition,
    PermanentError,
    TransientError,
    ValidationError,
)
from rollouts.model import CheckCounters, ManualAction, ManualActionKind, Rollout
from rollouts.phase import ACTIVE_PHASES, PHASE_DOCS, TERMINAL_PHASES, Phase
from rollouts.verdict import Check, Outcome, Verdict

__all__ = [
    "ACTIVE_PHASES",
    "PHASE_DOCS",
    "TERMINAL_PHASES",
    "Action",
    "AutocanaryError",
    "Check",
    "CheckCounters",
    "Decision",
    "FencedOut",
    "ForeignChange",
    "InvalidTransition",
    "ManualAction",
    "ManualActionKind",
    "Notify",
    "Outcome",
    "PermanentError",
    "Phase",
    "Promote",
    "Rollback",
    "Rollout",
    "ScheduleTick",
    "SetTraffic",
    "TransientError",
    "ValidationError",
    "Verdict",
    "abort",
    "decide",
    "handle",
    "pause",
    "pending_write",
    "promote_now",
    "resume",
]

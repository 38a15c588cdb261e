"""The phases of a rollout: an explicit enum, each value documented, with its terminal set.

The engine's transition table (`rollouts.engine`) says which event moves which phase where.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    PENDING = "pending"
    INITIALIZING = "initializing"
    PROGRESSING = "progressing"
    PAUSED = "paused"
    PROMOTING = "promoting"
    SUCCEEDED = "succeeded"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    SUPERSEDED = "superseded"
    FAILED = "failed"

    @property
    def doc(self) -> str:
        """One line saying what the phase means."""
        return PHASE_DOCS[self]

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_PHASES


PHASE_DOCS: dict[Phase, str] = {
    Phase.PENDING: "Registered; no worker has touched the Service yet.",
    Phase.INITIALIZING: "Both revisions pinned (stable 100 %, canary 0 %); waiting for the canary Ready.",
    Phase.PROGRESSING: "The canary gets the current step's weight; every tick judges it against the stable.",
    Phase.PAUSED: "Held by an operator at its weight; ticks still judge and a failure still rolls back.",
    Phase.PROMOTING: "Decided to promote; routing 100 % to the canary.",
    Phase.SUCCEEDED: "The canary serves 100 %; the rollout is over.",
    Phase.ROLLING_BACK: "Decided to roll back (failed check or abort); routing 100 % to the stable.",
    Phase.ROLLED_BACK: "The stable serves 100 % again because the canary was judged bad; over.",
    Phase.ABORTED: "The stable serves 100 % again because an operator aborted; over.",
    Phase.SUPERSEDED: "Someone else changed the Service's traffic or revisions; autocanary stopped writing.",
    Phase.FAILED: "An unrecoverable error (e.g. the Service was deleted); autocanary stopped writing.",
}

TERMINAL_PHASES: frozenset[Phase] = frozenset(
    {Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.SUPERSEDED, Phase.FAILED}
)
ACTIVE_PHASES: frozenset[Phase] = frozenset(Phase) - TERMINAL_PHASES

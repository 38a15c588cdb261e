"""The inputs of the engine: what happened, as values.

The runner observes the world (metrics, the Service, a canary's readiness, an operator's
command) and describes it with one of these; `rollouts.engine.handle` decides what follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rollouts.model import ManualActionKind
from rollouts.verdict import Verdict


@dataclass(frozen=True)
class Begin:
    """A worker picks up a pending rollout."""

    verb: ClassVar[str] = "begin"


@dataclass(frozen=True)
class CanaryReady:
    """Both revisions are pinned and the canary revision reports Ready."""

    verb: ClassVar[str] = "start progressing"


@dataclass(frozen=True)
class CanaryNotReady:
    """The canary revision is not Ready yet; `detail` says what its conditions say."""

    detail: str = ""
    verb: ClassVar[str] = "wait for the canary of"


@dataclass(frozen=True)
class Tick:
    """The analyzer's verdict on the last interval."""

    verdict: Verdict
    verb: ClassVar[str] = "judge"


@dataclass(frozen=True)
class TrafficApplied:
    """The router confirmed the final split (promotion or rollback) is live."""

    verb: ClassVar[str] = "complete"


@dataclass(frozen=True)
class RollbackRequired:
    """Something the engine cannot see requires a rollback (e.g. a permanent metrics error)."""

    reason: str
    verb: ClassVar[str] = "roll back"


@dataclass(frozen=True)
class Superseded:
    """Someone else changed the Service (traffic edited, another revision created)."""

    what: str
    verb: ClassVar[str] = "supersede"


@dataclass(frozen=True)
class Failed:
    """An unrecoverable error, such as the Service being deleted."""

    message: str
    verb: ClassVar[str] = "fail"


@dataclass(frozen=True)
class Abort:
    """An operator wants the stable back at 100 % now."""

    actor: str
    reason: str
    verb: ClassVar[str] = "abort"


@dataclass(frozen=True)
class Pause:
    """An operator holds the rollout at its current weight."""

    actor: str
    reason: str
    verb: ClassVar[str] = "pause"


@dataclass(frozen=True)
class Resume:
    """An operator lets a paused rollout continue."""

    actor: str
    reason: str
    verb: ClassVar[str] = "resume"


@dataclass(frozen=True)
class PromoteNow:
    """An operator promotes the canary without waiting for the remaining steps."""

    actor: str
    reason: str
    verb: ClassVar[str] = "promote"


Event = (
    Begin
    | CanaryReady
    | CanaryNotReady
    | Tick
    | TrafficApplied
    | RollbackRequired
    | Superseded
    | Failed
    | Abort
    | Pause
    | Resume
    | PromoteNow
)
ManualEvent = Abort | Pause | Resume | PromoteNow

MANUAL_EVENTS: dict[ManualActionKind, type[ManualEvent]] = {
    ManualActionKind.ABORT: Abort,
    ManualActionKind.PAUSE: Pause,
    ManualActionKind.RESUME: Resume,
    ManualActionKind.PROMOTE: PromoteNow,
}
"""The one table of the manual verbs: what each command an operator sends means to the engine
(the API's routes, the CLI's commands and the runner all read it)."""

"""What the analyzer tells the engine about one interval: a `Verdict` value, not a boolean.

The analyzer (`analyzer/verdict.py`) builds these; the engine only reads the outcome and the
canary's request count. Keeping "not enough data" (`inconclusive`) and "metrics unavailable"
(`error`) apart from `fail` is the point: an outage must never look like a bad canary, and a
quiet hour must never look like a good one.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Outcome(StrEnum):
    PASS = "pass"  # noqa: S105 (an outcome, not a password)
    """Enough data and nothing significant against the canary."""
    FAIL = "fail"
    """A statistical test or a guardrail says the canary is worse: roll back."""
    INCONCLUSIVE = "inconclusive"
    """Not enough data to judge; never counts as a failure, never as a pass."""
    ERROR = "error"
    """The metrics could not be read; retried, never promotes."""


_FROZEN = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class Check(BaseModel):
    """One test or guardrail, with the numbers behind it."""

    model_config = _FROZEN

    name: str
    """What was checked, e.g. `errors`, `latency>400ms`, `success_rate`, `p99`."""
    outcome: Outcome
    canary_value: float | None = None
    stable_value: float | None = None
    threshold: float | None = None
    """The bound the value is judged against (1/alpha for e-processes)."""
    evidence: float | None = None
    """The e-value reached so far, for statistical checks."""
    sentence: str = ""


class Verdict(BaseModel):
    """The judgement of one interval for one rollout."""

    model_config = _FROZEN

    outcome: Outcome
    checks: tuple[Check, ...] = ()
    evidence: float = 1.0
    """The largest e-value of the rollout's statistical tests so far (1 means no evidence)."""
    sentence: str = ""
    """One sentence a person can read: metric, both revisions' values, sample sizes, threshold."""
    evidence_by_test: dict[str, float] = Field(default_factory=dict)
    """Each statistical test's evidence against the canary so far, by name (`errors`, and
    `latency>200ms` for every latency boundary), for charts."""
    no_worse: bool = False
    """Every test that the canary is no worse than `max_odds_ratio` x the stable reached 1/beta: the
    step may end before `step_max_duration` (policies/model.py)."""
    no_worse_evidence: float | None = None
    """The weakest e-value of those tests so far (None when the policy has fixed steps, or before
    any interval could be compared)."""
    no_worse_sentence: str = ""
    """Why the canary counts as no worse, or how far its evidence has come, in words."""
    canary_requests: Annotated[int, Field(ge=0)] = 0
    """Requests the canary served in the interval (counts toward the step's minimum)."""
    stable_requests: Annotated[int, Field(ge=0)] = 0

"""Why a policy was refused, field by field.

`policies` imports nothing else of autocanary, so it carries its own small error type. Every
problem names the field path as a user would write it (`steps[2]`, `guardrails.max_p99_ms`), so
the API and the CLI can point at the exact line of a policy that is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldProblem:
    """One thing wrong with one field."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidPolicy(ValueError):
    """A policy (built-in, file or inline overrides) that does not validate."""

    def __init__(self, problems: Sequence[FieldProblem], source: str = "policy") -> None:
        self.problems = tuple(problems)
        self.source = source
        super().__init__(f"invalid {source}: " + "; ".join(str(p) for p in self.problems))

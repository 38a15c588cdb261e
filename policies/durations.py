"""Human-friendly durations for policy files.

Policies are written by people in YAML, where `step_min_duration: 2m30s` reads better than
`150` or `PT2M30S`. This module turns such strings into `timedelta` and back, and gives
pydantic a `Duration` type that accepts all three spellings and writes the short one.
"""

from __future__ import annotations

import functools
import math
import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

MAX_SECONDS = 366 * 86400.0
"""The longest duration a policy may hold (a year): beyond it is a typo, and beyond timedelta's range an overflow."""

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")


def parse_duration(value: object) -> object:
    """Turn "90s", "2m30s", "1h" or a number of seconds into a timedelta.

    Anything else is handed on unchanged, so pydantic still accepts ISO 8601 ("PT2M") and
    reports what it cannot parse with its own message and the field's path.
    """
    if isinstance(value, bool):
        return value  # let pydantic reject it; True is not a duration
    if isinstance(value, int | float):
        return _bounded(float(value))
    if isinstance(value, str):
        return _parse_text(value)
    return value


@functools.lru_cache(maxsize=1024)
def _parse_text(value: str) -> object:
    # Cached: every stored rollout's policy is read back at every tick, with the same few spellings.
    text = value.strip().replace(" ", "")
    if _WHOLE.match(text):
        return _bounded(sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text)))
    return value


def _bounded(seconds: float) -> timedelta:
    # Raised inside pydantic's validation, a ValueError becomes a problem naming the field.
    if not math.isfinite(seconds) or abs(seconds) > MAX_SECONDS:
        raise ValueError(f"must be a duration of at most {MAX_SECONDS / 86400:g}d")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest "1h2m3s" spelling of a duration (milliseconds when it has a fraction)."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    sign = "-" if total_ms < 0 else ""
    remaining = abs(total_ms)
    parts = []
    for unit, unit_ms in (("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)):
        count, remaining = divmod(remaining, unit_ms)
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""A timedelta that policy files may write as "30s", "5m", "1h30m" or a number of seconds."""

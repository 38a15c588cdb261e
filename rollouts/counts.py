"""Per-revision request counts for one interval: what the metrics backends return, as plain values.

Latency histograms are kept cumulative, as Prometheus keeps them (bucket `le=b` counts the
requests that took at most b), with boundaries in milliseconds whatever the dialect's unit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RevisionRef:
    """A version in a namespace: the key metrics are fetched and grouped by.

    A Knative revision by its name; a version of an Istio service by the service's name and the
    pods' `version` label (`service` is empty where the version's name alone identifies it).
    """

    namespace: str
    revision: str
    service: str = ""


@dataclass(frozen=True)
class RevisionCounts:
    requests: int = 0
    errors: int = 0
    """Responses with a 5xx status."""
    buckets: tuple[tuple[float, int], ...] = ()
    """(boundary in ms, requests <= boundary), ascending, finite boundaries only; `requests` is +Inf."""

    def __post_init__(self) -> None:
        if self.requests < 0 or self.errors < 0:
            raise ValueError("counts must not be negative")
        if self.errors > self.requests:
            raise ValueError(f"{self.errors} errors out of {self.requests} requests")

    @classmethod
    def of(cls, requests: int, errors: int = 0, buckets: Mapping[float, int] | None = None) -> RevisionCounts:
        """Counts with a cumulative histogram given as {boundary_ms: count}, made consistent."""
        ordered, highest = [], 0
        for boundary, count in sorted((buckets or {}).items()):
            # increase() per series can leave a bucket a hair above the next or above the total.
            highest = min(max(highest, int(count)), requests)
            ordered.append((float(boundary), highest))
        return cls(requests=requests, errors=min(errors, requests), buckets=tuple(ordered))

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def success_rate(self) -> float | None:
        return 1 - self.errors / self.requests if self.requests else None

    def slow(self, boundary_ms: float) -> int:
        """Requests slower than `boundary_ms` (which must be one of the bucket boundaries)."""
        for boundary, count in self.buckets:
            if boundary == boundary_ms:
                return self.requests - count
        raise KeyError(f"no bucket with boundary {boundary_ms:g} ms")

    @property
    def slow_by_boundary(self) -> dict[float, int]:
        return {boundary: self.requests - count for boundary, count in self.buckets}

    def quantile_ms(self, q: float) -> float | None:
        """The q-quantile by linear interpolation within buckets, as PromQL's histogram_quantile."""
        if not self.requests or not self.buckets:
            return None
        rank = q * self.requests
        lower_bound, lower_count = 0.0, 0
        for boundary, count in self.buckets:
            if count >= rank:
                if count == lower_count:
                    return boundary
                return lower_bound + (boundary - lower_bound) * (rank - lower_count) / (count - lower_count)
            lower_bound, lower_count = boundary, count
        return self.buckets[-1][0]  # in the +Inf bucket: the highest finite boundary, as Prometheus does

    def plus(self, other: RevisionCounts) -> RevisionCounts:
        merged = dict(self.buckets)
        for boundary, count in other.buckets:
            merged[boundary] = merged.get(boundary, 0) + count
        return RevisionCounts.of(self.requests + other.requests, self.errors + other.errors, merged)

"""`TickReport`: what one batch tick did, for logs, `/metrics` samples and the benchmarks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class TickReport:
    """What one batch did, for logs, metrics and benchmarks."""

    leased: int = 0
    decided: int = 0
    dropped: int = 0
    writes: int = 0
    metric_fetches: int = 0
    lateness: list[float] = field(default_factory=list)
    """Seconds between when each rollout was due and when its tick started."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall-clock seconds of each stage (leases and load, observe, metrics, save, writes)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.monotonic() - started

    @property
    def took(self) -> float:
        return sum(self.seconds.values())

    def stages(self) -> str:
        """`observe 0.12s, metrics 0.40s, ...`, for the log line of a slow tick."""
        return ", ".join(f"{stage} {seconds:.2f}s" for stage, seconds in self.seconds.items())

    def count(self, *, writes: int = 0, dropped: int = 0) -> None:
        """Thread-safe counting (a batch's writes run concurrently)."""
        with self._lock:
            self.writes += writes
            self.dropped += dropped

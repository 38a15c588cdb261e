"""`TickReport`: what one batch tick did, for logs, `/metrics` samples and the benchmarks."""

from __future__ import annotations

import threading
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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, *, writes: int = 0, dropped: int = 0) -> None:
        """Thread-safe counting (a batch's writes run concurrently)."""
        with self._lock:
            self.writes += writes
            self.dropped += dropped

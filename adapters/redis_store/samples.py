"""The latest measurements the workers take (tick lateness, abort latency), for /metrics and benchmarks.

| key | type | holds |
|---|---|---|
| `stats:{name}` | stream | the latest 20,000 values of a measurement |
"""

from __future__ import annotations

from collections.abc import Sequence

from adapters.redis_store.base import StoreBase
from adapters.redis_store.base import transient as _transient


class Samples(StoreBase):
    def record_samples(self, name: str, values: Sequence[float]) -> None:
        """Keep the latest measurements of `name` (tick lateness, abort latency) for /metrics and benchmarks."""
        if not values:
            return
        with _transient(f"record {name}"):
            pipe = self.redis.pipeline(transaction=False)
            for value in values:
                pipe.xadd(self._key("stats", name), {"v": f"{value:.6f}"}, maxlen=20_000, approximate=True)
            pipe.execute()

    def samples(self, name: str, count: int = 20_000) -> list[float]:
        with _transient(f"read {name}"):
            entries = self.redis.xrevrange(self._key("stats", name), count=count)
        return [float(fields["v"]) for _, fields in entries]

    def samples_since(self, name: str, since: str = "0") -> tuple[str, list[float]]:
        """The measurements of `name` recorded after the entry `since` (a stream id; "0": all kept),
        oldest first, and the id to ask from next time (for benchmarks reading as they go, since
        only the latest 20,000 are kept)."""
        with _transient(f"read {name}"):
            entries = self.redis.xrange(self._key("stats", name), min=f"({since}", count=1_000_000)
        return (entries[-1][0] if entries else since), [float(fields["v"]) for _, fields in entries]

    def samples_mark(self, name: str) -> str:
        """The id of the newest measurement of `name` ("0" when none): read `samples_since` it later."""
        with _transient(f"read {name}"):
            newest = self.redis.xrevrange(self._key("stats", name), count=1)
        return str(newest[0][0]) if newest else "0"

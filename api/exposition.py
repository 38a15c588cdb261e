"""The `/metrics` exposition: rollouts by phase, canary weights and evidence, checks, tick lateness
and abort latency, through `prometheus_client` (a custom collector over the store)."""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from adapters.redis_store import RolloutStore
from rollouts.phase import Phase

OUTCOMES = ("passed", "failed", "inconclusive", "errored")
SUMMARIES = (
    ("lateness", "autocanary_tick_lateness_seconds", "When a tick started minus when it was due."),
    ("abort_latency", "autocanary_abort_latency_seconds", "From an abort's request to stable 100 % confirmed."),
)


class RolloutCollector(Collector):
    """What the store keeps for `/metrics` as rollouts change (`RolloutStore.metric_values`): the
    scrape reads no rollout document, so it costs the same at 100 stored as at 100,000, and grows
    only with the active rollouts' own series (bench/api_load.py measures it)."""

    def __init__(self, store: RolloutStore) -> None:
        self.store = store
        self.gauges: Mapping[str, Sequence[Any]] = {}

    def collect(self) -> Iterator[Metric]:
        phases, gauges, checks = self.store.metric_values()
        by_phase = GaugeMetricFamily("autocanary_rollouts", "Rollouts by phase.", labels=["phase"])
        for phase in Phase:
            by_phase.add_metric([phase.value], phases.get(phase.value, 0))
        yield by_phase
        self.gauges = gauges  # written after the families, as text (`_per_rollout`)
        counted = GaugeMetricFamily(
            "autocanary_checks",
            "Ticks by verdict outcome, counted as rollouts are saved (rollouts deleted by retention included).",
            labels=["outcome"],
        )
        for outcome in OUTCOMES:
            counted.add_metric([outcome], checks.get(outcome, 0))
        yield counted
        for name, metric, help_text in SUMMARIES:
            yield _summary(metric, f"{help_text} Latest samples.", self.store.samples(name, 5000))


_PER_ROLLOUT = (
    ("autocanary_canary_weight", "Canary weight of each active rollout, percent.", 3),
    (
        "autocanary_evidence",
        "Evidence against the canary of each active rollout (e-value; 1 = none; the policy rolls back at 1/alpha).",
        4,
    ),
    (
        "autocanary_evidence_threshold",
        "The e-value at which each active rollout's policy rolls back (1/alpha_errors).",
        5,
    ),
    (
        "autocanary_no_worse_evidence",
        "Evidence that the canary is no worse, for each active rollout whose steps may end early"
        " (the weakest e-value of those tests; a step may end early at 1/beta).",
        6,
    ),
    ("autocanary_no_worse_threshold", "The e-value at which each such rollout's step may end early (1/beta).", 7),
)
"""Each per-rollout gauge: its name, help, and its position in the store's gauge list."""


def _per_rollout(gauges: Mapping[str, Sequence[Any]]) -> str:
    """The per-rollout gauges in the text format, written directly: they are most of a scrape
    (five series per active rollout), and prometheus_client's families cost ~60 us a rollout."""
    lines = []
    labelled = [
        (f'rollout="{_escape(i)}",namespace="{_escape(v[0])}",service="{_escape(v[1])}",canary="{_escape(v[2])}"', v)
        for i, v in gauges.items()
    ]
    for name, help_text, position in _PER_ROLLOUT:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines += [f"{name}{{{labels}}} {_number(v[position])}" for labels, v in labelled if v[position] is not None]
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    """As prometheus_client writes a value (1.0, 1e-07, +Inf)."""
    written: str = _go_float(value)
    return written


_go_float: Any = floatToGoString  # untyped in prometheus_client


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _summary(name: str, help_text: str, samples: list[float]) -> Metric:
    summary = Metric(name, help_text, "summary")
    for q in (0.5, 0.9, 0.99):
        value = (
            statistics.quantiles(samples, n=100)[round(q * 100) - 1]
            if len(samples) > 1
            else (samples[0] if samples else 0.0)
        )
        summary.add_sample(name, {"quantile": str(q)}, value)
    summary.add_sample(f"{name}_sum", {}, sum(samples))
    summary.add_sample(f"{name}_count", {}, len(samples))
    return summary


def exposition(store: RolloutStore) -> str:
    """The `/metrics` body, in Prometheus's text format."""
    registry = CollectorRegistry(auto_describe=False)
    collector = RolloutCollector(store)
    registry.register(collector)
    return generate_latest(registry).decode() + _per_rollout(collector.gauges)

"""The `/metrics` exposition: rollouts by phase, canary weights and evidence, checks, tick lateness
and abort latency, in Prometheus's text format."""

from __future__ import annotations

import statistics
from collections import Counter

from adapters.redis_store import RolloutStore
from rollouts.phase import Phase


def exposition(store: RolloutStore) -> str:
    """The `/metrics` body. It reads every stored rollout (bench/metrics_scrape.py measures what that costs)."""
    rollouts = store.list_rollouts(limit=100_000).rollouts
    phases = Counter(r.phase.value for r in rollouts)
    checks = Counter[str]()
    for rollout in rollouts:
        for outcome, count in rollout.checks.model_dump().items():
            checks[outcome] += count
    lines = ["# HELP autocanary_rollouts Rollouts by phase.", "# TYPE autocanary_rollouts gauge"]
    lines += [f'autocanary_rollouts{{phase="{phase.value}"}} {phases.get(phase.value, 0)}' for phase in Phase]
    lines += [
        "# HELP autocanary_canary_weight Canary weight of each active rollout, percent.",
        "# TYPE autocanary_canary_weight gauge",
    ]
    active = [r for r in rollouts if not r.is_terminal]
    labels = {
        r.id: f'rollout="{r.id}",namespace="{r.namespace}",service="{r.service}",canary="{r.canary_revision}"'
        for r in active
    }
    lines += [f"autocanary_canary_weight{{{labels[r.id]}}} {r.canary_weight}" for r in active]
    lines += [
        "# HELP autocanary_evidence Evidence against the canary of each active rollout (e-value; 1 = none;"
        " the policy rolls back at 1/alpha).",
        "# TYPE autocanary_evidence gauge",
    ]
    lines += [f"autocanary_evidence{{{labels[r.id]}}} {r.evidence:.6g}" for r in active]
    lines += [
        "# HELP autocanary_evidence_threshold The e-value at which each active rollout's policy rolls back"
        " (1/alpha_errors).",
        "# TYPE autocanary_evidence_threshold gauge",
    ]
    lines += [f"autocanary_evidence_threshold{{{labels[r.id]}}} {1 / r.policy.alpha_errors:.6g}" for r in active]
    lines += [
        "# HELP autocanary_checks Ticks by verdict outcome over the rollouts in the store.",
        "# TYPE autocanary_checks gauge",
    ]
    lines += [
        f'autocanary_checks{{outcome="{outcome}"}} {checks.get(outcome, 0)}'
        for outcome in ("passed", "failed", "inconclusive", "errored")
    ]
    for name, metric, help_text in (
        ("lateness", "autocanary_tick_lateness_seconds", "When a tick started minus when it was due."),
        ("abort_latency", "autocanary_abort_latency_seconds", "From an abort's request to stable 100 % confirmed."),
    ):
        samples = store.samples(name, 5000)
        lines += [f"# HELP {metric} {help_text} Latest samples.", f"# TYPE {metric} summary"]
        for q in (0.5, 0.9, 0.99):
            value = (
                statistics.quantiles(samples, n=100)[round(q * 100) - 1]
                if len(samples) > 1
                else (samples[0] if samples else 0.0)
            )
            lines.append(f'{metric}{{quantile="{q}"}} {value:.6f}')
        lines += [f"{metric}_sum {sum(samples):.6f}", f"{metric}_count {len(samples)}"]
    return "\n".join(lines) + "\n"

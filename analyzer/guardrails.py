"""Absolute checks on the canary alone: the thresholds users of other tools know.

They catch a canary that is bad in absolute terms even when the stable is just as bad, and
they are judged only over windows with at least `guardrails.min_requests` canary requests: a
window of 3 requests with one error says nothing about a 99 % success rate. Pure.
"""

from __future__ import annotations

from policies import Guardrails
from rollouts.counts import RevisionCounts
from rollouts.verdict import Check, Outcome


def check_guardrails(guardrails: Guardrails, canary: RevisionCounts) -> list[Check]:
    checks: list[Check] = []
    enough = canary.requests >= guardrails.min_requests
    sample = f"{canary.requests:,} canary requests"
    if guardrails.min_success_rate is not None:
        floor = guardrails.min_success_rate
        if not enough or canary.success_rate is None:
            checks.append(_too_few("success_rate", floor, sample, guardrails.min_requests))
        else:
            rate = canary.success_rate * 100
            ok = rate >= floor
            checks.append(
                Check(
                    name="success_rate",
                    outcome=Outcome.PASS if ok else Outcome.FAIL,
                    canary_value=rate,
                    threshold=floor,
                    sentence=f"canary success rate {rate:.2f} % {'>=' if ok else '<'} {floor:g} % over {sample}",
                )
            )
    if guardrails.max_p99_ms is not None:
        ceiling = guardrails.max_p99_ms
        p99 = canary.quantile_ms(0.99)
        if not enough or p99 is None:
            checks.append(_too_few("p99", ceiling, sample, guardrails.min_requests))
        else:
            ok = p99 <= ceiling
            checks.append(
                Check(
                    name="p99",
                    outcome=Outcome.PASS if ok else Outcome.FAIL,
                    canary_value=p99,
                    threshold=ceiling,
                    sentence=f"canary p99 {p99:.0f} ms {'<=' if ok else '>'} {ceiling:g} ms over {sample}",
                )
            )
    return checks


def _too_few(name: str, threshold: float, sample: str, minimum: int) -> Check:
    return Check(
        name=name,
        outcome=Outcome.INCONCLUSIVE,
        threshold=threshold,
        sentence=f"{name} not judged: {sample} in the window, {minimum} needed",
    )

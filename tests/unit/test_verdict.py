"""Counts, guardrails and verdicts: what the analyzer says about an interval, and in which words."""

from __future__ import annotations

import pytest

from analyzer.guardrails import check_guardrails
from analyzer.verdict import AnalysisState, choose_boundaries, error_verdict, judge
from policies import Guardrails, LatencyBoundaries, load_policy
from rollouts import Outcome
from rollouts.counts import RevisionCounts

BOUNDS = (50.0, 100.0, 200.0, 400.0, 800.0)


def histogram(requests: int, shares_at_most: tuple[float, ...]) -> dict[float, int]:
    return {b: round(requests * share) for b, share in zip(BOUNDS, shares_at_most, strict=True)}


FAST = (0.2, 0.5, 0.9, 0.99, 1.0)
SLOW = (0.05, 0.2, 0.5, 0.8, 0.95)


def test_quantile_interpolates_like_histogram_quantile() -> None:
    counts = RevisionCounts.of(100, 0, {100.0: 50, 200.0: 90, 400.0: 100})
    assert counts.quantile_ms(0.5) == 100.0
    assert counts.quantile_ms(0.7) == pytest.approx(150.0)
    assert counts.quantile_ms(0.95) == pytest.approx(300.0)
    assert RevisionCounts.of(10, 0, {100.0: 5}).quantile_ms(0.99) == 100.0  # in +Inf: the highest boundary
    assert RevisionCounts().quantile_ms(0.5) is None


def test_counts_are_made_consistent() -> None:
    counts = RevisionCounts.of(10, 12, {100.0: 11, 50.0: 7, 200.0: 9})
    assert counts.errors == 10
    assert counts.buckets == ((50.0, 7), (100.0, 10), (200.0, 10))
    assert counts.slow_by_boundary == {50.0: 3, 100.0: 0, 200.0: 0}


def test_guardrails_judge_only_with_enough_requests() -> None:
    guardrails = Guardrails(min_success_rate=99.0, max_p99_ms=500, min_requests=50)
    few = check_guardrails(guardrails, RevisionCounts.of(10, 5, histogram(10, SLOW)))
    assert [c.outcome for c in few] == [Outcome.INCONCLUSIVE, Outcome.INCONCLUSIVE]
    bad = check_guardrails(guardrails, RevisionCounts.of(1000, 20, histogram(1000, SLOW)))
    assert [c.outcome for c in bad] == [Outcome.FAIL, Outcome.FAIL]
    assert bad[0].sentence == "canary success rate 98.00 % < 99 % over 1,000 canary requests"
    assert bad[1].sentence.startswith("canary p99 ") and bad[1].sentence.endswith("> 500 ms over 1,000 canary requests")
    good = check_guardrails(guardrails, RevisionCounts.of(1000, 2, histogram(1000, FAST)))
    assert [c.outcome for c in good] == [Outcome.PASS, Outcome.PASS]
    assert check_guardrails(Guardrails(), RevisionCounts.of(1000, 900)) == []  # both off by default


def test_boundaries_nearest_the_quantiles_and_the_slo() -> None:
    stable = RevisionCounts.of(1000, 0, histogram(1000, FAST))
    assert choose_boundaries(LatencyBoundaries(quantiles=(0.9,)), stable) == (200.0,)
    assert choose_boundaries(LatencyBoundaries(quantiles=(0.9, 0.99), slo_ms=750), stable) == (200.0, 400.0, 800.0)
    assert choose_boundaries(LatencyBoundaries(), RevisionCounts.of(10)) == ()


def test_an_interval_without_canary_requests_is_inconclusive() -> None:
    judgement = judge(load_policy("default"), AnalysisState(), RevisionCounts(), RevisionCounts.of(900, 3))
    assert judgement.verdict.outcome is Outcome.INCONCLUSIVE
    assert judgement.verdict.sentence == "no canary requests in the interval: nothing to compare"
    assert judgement.state.errors == AnalysisState().errors


def test_a_guardrail_fails_even_when_the_stable_is_silent() -> None:
    policy = load_policy("conservative")
    judgement = judge(policy, AnalysisState(), RevisionCounts.of(500, 50), RevisionCounts())
    assert judgement.verdict.outcome is Outcome.FAIL
    assert "success rate 90.00 % < 99 %" in judgement.verdict.sentence


def test_a_regression_fails_with_a_sentence_naming_both_revisions_sizes_and_threshold() -> None:
    policy, state = load_policy("default"), AnalysisState()
    for _ in range(30):
        judgement = judge(policy, state, RevisionCounts.of(100, 6), RevisionCounts.of(900, 4))
        state = judgement.state
        if judgement.verdict.outcome is Outcome.FAIL:
            break
    verdict = judgement.verdict
    assert verdict.outcome is Outcome.FAIL
    assert verdict.sentence.startswith("errors: canary 5xx 6.00 % (")
    assert "vs stable 0.44 % (" in verdict.sentence
    assert ">= 200" in verdict.sentence and "requests" in verdict.sentence
    assert verdict.evidence >= 200
    assert verdict.canary_requests == 100


def test_latency_regression_is_caught_from_the_first_interval() -> None:
    policy = load_policy("default")
    judgement = judge(
        policy,
        AnalysisState(),
        RevisionCounts.of(300, 0, histogram(300, SLOW)),
        RevisionCounts.of(3000, 0, histogram(3000, FAST)),
    )
    # chosen from the pooled histogram, so a slow canary nudges its tail boundary up
    assert judgement.state.latency_boundaries_ms == (200.0, 800.0)
    assert judgement.verdict.outcome is Outcome.FAIL
    assert judgement.verdict.sentence.startswith("latency>")


def test_a_good_canary_passes_and_the_state_round_trips() -> None:
    policy, state = load_policy("default"), AnalysisState()
    judgement = judge(
        policy, state, RevisionCounts.of(100, 1, histogram(100, FAST)), RevisionCounts.of(900, 4, histogram(900, FAST))
    )
    assert judgement.verdict.outcome is Outcome.PASS
    assert AnalysisState.load(judgement.state.dump()) == judgement.state
    assert AnalysisState.load({}) == AnalysisState()


def test_error_verdicts_never_pass_or_fail() -> None:
    verdict = error_verdict("Prometheus unreachable")
    assert verdict.outcome is Outcome.ERROR
    assert verdict.sentence == "metrics unavailable: Prometheus unreachable"


def test_a_good_canary_is_shown_no_worse_on_every_test_with_a_sentence() -> None:
    policy, state = load_policy("default"), AnalysisState()
    judgements = []
    for _ in range(40):  # 1 % errors on both sides, the same latency
        canary = RevisionCounts.of(2000, 20, histogram(2000, FAST))
        judgements.append(judge(policy, state, canary, RevisionCounts.of(8000, 80, histogram(8000, FAST))))
        state = judgements[-1].state
    first, last = judgements[0].verdict, judgements[-1].verdict
    assert not first.no_worse and first.no_worse_evidence is not None and first.no_worse_evidence < 100
    assert "canary not yet shown no worse than 1.5x stable's error odds" in first.no_worse_sentence
    assert last.no_worse and last.outcome is Outcome.PASS
    assert last.no_worse_evidence is not None and last.no_worse_evidence >= 100
    assert last.no_worse_sentence.startswith("canary no worse than 1.5x stable's error odds: evidence ")
    assert ">= 100 over 400,000 requests" in last.no_worse_sentence
    assert "stable's odds of a request slower than 200 ms" in last.no_worse_sentence
    assert len(state.no_worse_latency) == len(state.latency_boundaries_ms) == 2


def test_a_canary_worse_on_latency_alone_is_never_shown_no_worse() -> None:
    policy, state = load_policy("default", {"alpha_latency": 1e-9}), AnalysisState()  # never rolled back here
    for _ in range(40):
        canary = RevisionCounts.of(2000, 20, histogram(2000, (0.1, 0.4, 0.85, 0.98, 1.0)))
        judgement = judge(policy, state, canary, RevisionCounts.of(8000, 80, histogram(8000, FAST)))
        state = judgement.state
    assert not judgement.verdict.no_worse
    assert "canary no worse than 1.5x stable's error odds" in judgement.verdict.no_worse_sentence
    assert "not yet shown no worse than 1.5x stable's odds of a request slower" in judgement.verdict.no_worse_sentence


def test_fixed_steps_run_no_no_worse_test() -> None:
    policy = load_policy("conservative")
    judgement = judge(policy, AnalysisState(), RevisionCounts.of(2000, 20), RevisionCounts.of(8000, 80))
    assert (judgement.verdict.no_worse, judgement.verdict.no_worse_evidence) == (False, None)
    assert judgement.state.no_worse_errors == AnalysisState().no_worse_errors


def test_a_state_saved_before_no_worse_tests_starts_them_fresh() -> None:
    policy = load_policy("default")
    first = judge(
        policy,
        AnalysisState(),
        RevisionCounts.of(100, 1, histogram(100, FAST)),
        RevisionCounts.of(900, 4, histogram(900, FAST)),
    )
    stored = first.state.dump()
    del stored["no_worse_errors"], stored["no_worse_latency"]
    again = judge(
        policy,
        AnalysisState.load(stored),
        RevisionCounts.of(100, 1, histogram(100, FAST)),
        RevisionCounts.of(900, 4, histogram(900, FAST)),
    )
    assert len(again.state.no_worse_latency) == len(again.state.latency_boundaries_ms)
    assert again.verdict.outcome is Outcome.PASS


def test_the_verdict_carries_each_tests_evidence_every_latency_boundary_apart() -> None:
    policy, state = load_policy("default"), AnalysisState()
    canary = RevisionCounts.of(300, 30, histogram(300, SLOW))
    judgement = judge(policy, state, canary, RevisionCounts.of(3000, 3, histogram(3000, FAST)))
    tests = judgement.verdict.evidence_by_test
    assert set(tests) == {"errors", "latency>200ms", "latency>800ms"}
    assert tests["errors"] > 1 and all(value > 0 for value in tests.values())
    assert judgement.verdict.evidence >= tests["errors"]  # the largest of the tests (latency averaged)

"""The domain values: rollouts, phases, actions, errors."""

from __future__ import annotations

import json

import pytest

from analyzer.verdict import AnalysisState, judge
from policies import FieldProblem, InvalidPolicy, load_policy
from rollouts import PHASE_DOCS, Phase, Rollout, SetTraffic, ValidationError
from rollouts.counts import RevisionCounts
from tests.factories import T0, policy, rollout


def test_every_phase_has_a_doc_line() -> None:
    assert set(PHASE_DOCS) == set(Phase)
    assert all(phase.doc.endswith(".") for phase in Phase)


@pytest.mark.parametrize(("stable", "canary"), [(101, -1), (50, 49), (-5, 105), (0, 99)])
def test_set_traffic_refuses_splits_that_do_not_sum_to_100(stable: int, canary: int) -> None:
    with pytest.raises(ValueError, match="summing to 100"):
        SetTraffic(stable=stable, canary=canary)


def test_new_rollout_reports_every_bad_name_at_once() -> None:
    with pytest.raises(ValidationError) as error:
        Rollout.new(
            id="r",
            namespace="Shop",
            service="check_out",
            stable_revision="a" * 64,
            canary_revision="ok-00002",
            policy=policy(),
            now=T0,
        )
    fields = [problem.field for problem in error.value.problems]
    assert fields == ["namespace", "service", "stable_revision"]
    assert "at most 63 characters" in str(error.value)


def test_canary_must_differ_from_stable() -> None:
    with pytest.raises(ValidationError, match="canary_revision: must differ from stable_revision"):
        Rollout.new(
            id="r",
            namespace="shop",
            service="checkout",
            stable_revision="checkout-00001",
            canary_revision="checkout-00001",
            policy=policy(),
            now=T0,
        )


def test_rollout_round_trips_through_json_with_its_policy() -> None:
    original = rollout(policy(step_min_duration="2m30s", steps=[1, 50]), labels={"commit": "abc123"})
    restored = Rollout.model_validate_json(original.model_dump_json())
    assert restored == original
    assert restored.policy.step_min_duration.total_seconds() == 150


def test_rollout_is_frozen() -> None:
    with pytest.raises(ValueError, match="frozen"):
        rollout().phase = Phase.SUCCEEDED


def test_validation_error_carries_policy_problems_under_the_request_field() -> None:
    error = ValidationError.from_invalid_policy(
        InvalidPolicy([FieldProblem("steps[1]", "too big"), FieldProblem("", "not a mapping")]),
        "policy_overrides",
    )
    assert [str(p) for p in error.problems] == [
        "policy_overrides.steps[1]: too big",
        "policy_overrides: not a mapping",
    ]


def test_a_rollout_with_fixed_steps_is_stored_without_the_fields_of_steps_that_end_early() -> None:
    fixed = rollout(policy(step_min_duration="150s"))
    stored = json.loads(fixed.to_stored())
    assert not {"step_max_duration", "beta", "max_odds_ratio"} & set(stored["policy"])
    assert Rollout.from_stored(fixed.to_stored()) == fixed  # read back: fixed steps of 150 s
    early = rollout(policy())
    assert {"step_max_duration", "beta", "max_odds_ratio"} <= set(json.loads(early.to_stored())["policy"])
    assert Rollout.from_stored(early.to_stored()) == early


def test_an_analysis_state_with_fixed_steps_is_stored_as_before_no_worse_tests() -> None:
    fixed = load_policy("conservative")
    judged = judge(fixed, AnalysisState(), RevisionCounts.of(500, 5), RevisionCounts.of(4500, 40)).state
    assert not {"no_worse_errors", "no_worse_latency"} & set(judged.dump())
    assert AnalysisState.load(judged.dump()) == judged
    early = judge(load_policy("default"), AnalysisState(), RevisionCounts.of(500, 5), RevisionCounts.of(4500, 40))
    assert "no_worse_errors" in early.state.dump() and AnalysisState.load(early.state.dump()) == early.state

"""The domain values: rollouts, phases, actions, errors."""

from __future__ import annotations

import pytest

from policies import FieldProblem, InvalidPolicy
from rollouts import PHASE_DOCS, Phase, Rollout, SetTraffic, ValidationError
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

"""The policy model, the built-in library and the error messages users see."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from policies import (
    InvalidPolicy,
    Policy,
    builtin_names,
    format_duration,
    load_policy,
    parse_duration,
    parse_policy_document,
)
from rollouts.model import Rollout
from tests.factories import policy, rollout


def test_the_built_ins_exist() -> None:
    assert builtin_names() == ["conservative", "default", "demo", "fast", "gateway-api-istio"]


@pytest.mark.parametrize("name", builtin_names())
def test_each_built_in_loads_and_names_itself(name: str) -> None:
    policy = load_policy(name)
    assert policy.name == name
    assert policy.description
    assert policy.interval <= policy.step_min_duration


def test_conservative_is_more_careful_than_default() -> None:
    default, conservative = load_policy("default"), load_policy("conservative")
    assert len(conservative.steps) > len(default.steps)
    assert conservative.step_weight(0) < default.step_weight(0)
    assert conservative.alpha_errors < default.alpha_errors
    assert conservative.alpha_latency < default.alpha_latency


def test_fast_has_fewer_shorter_steps_and_demo_is_seconds_long() -> None:
    default, fast, demo = load_policy("default"), load_policy("fast"), load_policy("demo")
    assert len(fast.steps) < len(default.steps)
    assert fast.step_max_duration < default.step_max_duration  # a step's length when none ends early
    assert demo.step_max_duration <= timedelta(seconds=10)
    assert demo.interval <= timedelta(seconds=1)


def test_overrides_merge_deeply_and_replace_lists() -> None:
    policy = load_policy("conservative", {"steps": [20, 60], "guardrails": {"max_p99_ms": 250}})
    assert policy.steps == (20, 60)
    assert policy.guardrails.max_p99_ms == 250
    assert policy.guardrails.min_success_rate == 99.0  # kept from conservative
    assert policy.name == "conservative"


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"steps": []}, "steps", "at least 1"),
        ({"steps": [5, 100]}, "steps[1]", "less than or equal to 99"),
        ({"steps": [0, 10]}, "steps[0]", "greater than or equal to 1"),
        ({"steps": [10, 10]}, "steps", "strictly increasing"),
        ({"steps": "5,10"}, "steps", "valid tuple"),
        ({"interval": "5m"}, "interval", "must not be longer than step_min_duration"),
        ({"interval": "0.5s", "step_min_duration": "1m"}, "interval", "at least 1s"),
        ({"step_min_duration": "soon"}, "step_min_duration", "duration"),
        ({"alpha_errors": 0}, "alpha_errors", "greater than 0"),
        ({"alpha_latency": 0.9}, "alpha_latency", "less than or equal to 0.5"),
        ({"dialect": "linkerd"}, "dialect", "knative-opencensus"),
        (
            {"guardrails": {"min_success_rate": 120}},
            "guardrails.min_success_rate",
            "less than or equal to 100",
        ),
        ({"guardrails": {"max_p99": 300}}, "guardrails.max_p99", "did you mean 'max_p99_ms'"),
        ({"latency_boundaries": {"quantiles": [0.9, 0.9]}}, "latency_boundaries.quantiles", "distinct"),
        ({"on_insufficient_traffic": "panic"}, "on_insufficient_traffic", "'rollback' or 'hold'"),
        ({"progress_deadline": "-1m"}, "progress_deadline", "duration"),
        ({"notifications": [{"kind": "webhook", "url": "ftp://x"}]}, "notifications[0].url", "pattern"),
        (
            {"notifications": [{"kind": "email", "url": "https://x"}]},
            "notifications[0].kind",
            "'webhook' or 'slack'",
        ),
        ({"stepz": [5]}, "stepz", "did you mean 'steps'"),
        ({"steps": [True]}, "steps[0]", "valid integer"),
        ({"step_min_duration": 1e308}, "step_min_duration", "at most 366d"),
        ({"step_min_duration": 100000000000000000000}, "step_min_duration", "at most 366d"),
        ({"step_min_duration": "999999999999d"}, "step_min_duration", "at most 366d"),
        ({"step_min_duration": float("inf")}, "step_min_duration", "at most 366d"),
        ({"interval": float("nan")}, "interval", "at most 366d"),
    ],
)
def test_a_bad_policy_names_the_field(overrides: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(InvalidPolicy) as error:
        load_policy("default", overrides)
    problems = {problem.field: problem.message for problem in error.value.problems}
    assert field in problems, problems
    assert message in problems[field]


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InvalidPolicy) as error:
        load_policy("default", {"steps": [50, 5], "alpha_errors": 2, "bogus": True})
    assert {p.field for p in error.value.problems} == {"steps", "alpha_errors", "bogus"}
    assert str(error.value).startswith("invalid policy 'default' with overrides: ")


def test_an_unknown_policy_lists_the_built_ins() -> None:
    with pytest.raises(InvalidPolicy, match="policy: unknown policy 'yolo'; built-ins are: conservative, default"):
        load_policy("yolo")


def test_a_document_extends_a_built_in() -> None:
    policy = parse_policy_document({"extends": "fast", "name": "checkout", "steps": [20, 40]})
    assert policy.steps == (20, 40)
    assert policy.step_min_duration == load_policy("fast").step_min_duration
    assert policy.name == "checkout"


@pytest.mark.parametrize(
    ("document", "field"),
    [([1, 2], ""), ({"extends": "nope"}, "extends"), ({"extends": 3}, "extends")],
)
def test_a_bad_document_names_the_problem(document: object, field: str) -> None:
    with pytest.raises(InvalidPolicy) as error:
        parse_policy_document(document)
    assert error.value.problems[0].field == field


def test_policy_round_trips_through_json() -> None:
    policy = load_policy("conservative")
    assert Policy.model_validate_json(policy.model_dump_json()) == policy


def test_fields_carry_their_docs_into_the_schema() -> None:
    schema = Policy.model_json_schema()
    assert "strictly increasing" in schema["properties"]["steps"]["description"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90s", 90), ("2m30s", 150), ("1h", 3600), ("250ms", 0.25), (45, 45), ("1.5m", 90)],
)
def test_durations_parse(text: object, expected: float) -> None:
    parsed = parse_duration(text)
    assert isinstance(parsed, timedelta)
    assert parsed.total_seconds() == expected


@pytest.mark.parametrize(("seconds", "text"), [(150, "2m30s"), (3600, "1h"), (0.25, "250ms"), (0, "0s")])
def test_durations_format_short(seconds: float, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text


def test_default_ends_steps_early_between_its_floor_and_its_longest_length() -> None:
    default = load_policy("default")
    assert default.ends_steps_early
    assert (default.step_min_duration, default.step_max_duration) == (timedelta(seconds=30), timedelta(seconds=150))
    assert (default.beta, default.max_odds_ratio) == (0.01, 1.5)


@pytest.mark.parametrize("name", ["conservative", "fast", "demo"])
def test_policies_that_set_only_a_step_length_keep_fixed_steps(name: str) -> None:
    policy = load_policy(name)
    assert not policy.ends_steps_early
    assert policy.step_max_duration == policy.step_min_duration


def test_an_override_of_the_floor_alone_means_fixed_steps_of_that_length() -> None:
    policy = load_policy("default", {"step_min_duration": "10s"})
    assert (policy.step_min_duration, policy.step_max_duration) == (timedelta(seconds=10), timedelta(seconds=10))
    early = load_policy("default", {"step_min_duration": "10s", "step_max_duration": "1m"})
    assert early.ends_steps_early and early.step_max_duration == timedelta(minutes=1)


def test_a_stored_policy_from_before_early_steps_keeps_its_fixed_steps() -> None:
    stored = load_policy("default").model_dump(mode="json", exclude={"step_max_duration", "beta", "max_odds_ratio"})
    old = Policy.model_validate({**stored, "step_min_duration": "150s"})
    assert not old.ends_steps_early and old.step_max_duration == timedelta(seconds=150)


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"step_max_duration": "20s"}, "step_max_duration", "must not be shorter than step_min_duration (30s)"),
        ({"beta": 0}, "beta", "greater than 0"),
        ({"beta": 0.9}, "beta", "less than or equal to 0.5"),
        ({"max_odds_ratio": 1}, "max_odds_ratio", "greater than 1"),
        ({"max_odds_ratio": "a lot"}, "max_odds_ratio", "valid number"),
        ({"step_max_duration": "0s", "step_min_duration": "0s"}, "step_min_duration", "longer than 0s"),
    ],
    ids=["max-below-floor", "beta-zero", "beta-too-big", "odds-ratio-one", "odds-ratio-text", "zero-length"],
)
def test_bad_early_step_fields_are_refused_naming_the_field(
    overrides: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(InvalidPolicy) as caught:
        load_policy("default", overrides)
    problems = {problem.field: problem.message for problem in caught.value.problems}
    assert field in problems and words in problems[field], problems


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"steps": [{"match": {"tag": "beta"}}, 50]}, "steps", "routes by tag beta, but the canary carries the tag"),
        ({"canary_tag": "", "steps": [{"match": {"tag": "canary"}}, 50]}, "steps", "carries no tag"),
        ({"steps": [{"match": {"tag": "canary", "method": "GET"}}, 50]}, "steps[0].match", "a tag match stands alone"),
        ({"canary_tag": "Canary"}, "canary_tag", "should match pattern"),
        ({"steps": [{"match": {"tag": "-x"}}, 50]}, "steps[0].match.tag", "should match pattern"),
    ],
)
def test_a_tag_step_names_the_canary_tag_and_stands_alone(overrides: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InvalidPolicy) as refused:
        load_policy("default", overrides)
    assert refused.value.problems[0].field == field and words in refused.value.problems[0].message


def test_a_rollout_with_the_default_tag_is_stored_as_the_release_before_tags_stored_it() -> None:
    stored = json.loads(rollout().to_stored())
    assert "canary_tag" not in stored["policy"] and "keep_canary_tag" not in stored["policy"]
    kept = json.loads(rollout(policy(keep_canary_tag=True)).to_stored())
    assert kept["policy"]["keep_canary_tag"] is True
    assert Rollout.from_stored(rollout(policy(canary_tag="try")).to_stored()).target.tag == "try"

"""`autocanary replay`: backtesting a policy on recorded traces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from analyzer.eprocess import EProcess
from analyzer.replay import TraceError, TraceInterval, parse_trace, replay, trace_record
from cli.main import app
from policies import Dialect, load_policy
from rollouts.counts import RevisionCounts

TRACES = Path(__file__).parent.parent / "data" / "traces"
BAD, GOOD = TRACES / "bad-canary.jsonl", TRACES / "good-canary.jsonl"
runner = CliRunner()


def crossing_time(path: Path, alpha: float) -> float | None:
    """When the error e-process of the trace first reaches 1/alpha, computed independently."""
    process = EProcess()
    for line in path.read_text().splitlines():
        record = json.loads(line)
        c, s = record["canary"], record["stable"]
        process = process.updated(c["requests"], c["errors"], s["requests"], s["errors"])
        if process.crossed(alpha):
            return float(record["t"])
    return None


def test_a_bad_canary_is_rolled_back_at_the_interval_the_e_process_crosses() -> None:
    policy = load_policy("default")
    result = replay(policy, parse_trace(BAD.read_text().splitlines(), policy.dialect))
    expected = crossing_time(BAD, policy.alpha_errors)
    assert expected is not None and expected > 10  # it takes several intervals of evidence
    assert (result.decision, result.t) == ("rollback", expected)
    assert result.reason.startswith("errors: canary 5xx 2.00 %")
    assert len(result.steps) == expected / 10


def test_a_good_canary_is_not_rolled_back() -> None:
    policy = load_policy("default")
    result = replay(policy, parse_trace(GOOD.read_text().splitlines(), policy.dialect))
    assert (result.decision, result.t) == ("no_rollback", None)
    assert len(result.steps) == 30
    assert result.reason.startswith("no check failed over 30 intervals")


def test_cli_json_prints_one_line_per_trace_in_order() -> None:
    result = runner.invoke(app, ["replay", str(BAD), str(GOOD), "--policy", "default", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["decision"] for line in lines] == ["rollback", "no_rollback"]
    assert lines[0]["t"] == crossing_time(BAD, load_policy("default").alpha_errors)
    assert lines[1]["t"] is None
    assert set(lines[0]) == {"decision", "t", "reason", "promote_t"}
    assert (lines[0]["promote_t"], lines[1]["promote_t"]) == (None, None)  # default: 4 steps of 150 s > 300 s


def test_promote_t_is_when_the_schedule_would_have_promoted() -> None:
    fast = load_policy("fast")  # three fixed steps of 60 s
    result = replay(fast, parse_trace(GOOD.read_text().splitlines(), fast.dialect))
    assert (result.decision, result.promote_t) == ("no_rollback", 180)
    cli = runner.invoke(app, ["replay", str(GOOD), "--policy", "fast", "--json"])
    assert json.loads(cli.stdout)["promote_t"] == 180
    text = runner.invoke(app, ["replay", str(GOOD), "--policy", "fast"], env={"COLUMNS": "200"})
    assert "schedule: promoted at t=180" in text.output


def test_promote_t_shows_steps_ending_early_on_a_busy_good_canary() -> None:
    policy = load_policy("default")
    busy = [
        TraceInterval(float(t), RevisionCounts.of(5000, 50), RevisionCounts.of(20000, 200)) for t in range(10, 610, 10)
    ]
    result = replay(policy, busy)
    assert result.decision == "no_rollback"
    assert result.promote_t is not None and result.promote_t < 600  # fixed steps would take 4 x 150 s
    assert result.promote_t >= 4 * policy.step_min_duration.total_seconds()
    fixed = replay(load_policy("default", {"step_min_duration": "150s"}), busy)
    assert fixed.promote_t == 600


def test_cli_prints_each_interval_then_the_decision() -> None:
    result = runner.invoke(app, ["replay", str(BAD)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "t=     10  pass" in result.output
    assert "decision: rollback at t=" in result.output


def test_cli_reports_a_bad_trace_with_its_line(tmp_path: Path) -> None:
    trace = tmp_path / "broken.jsonl"
    trace.write_text(
        '{"t": 10, "canary": {"requests": 5, "errors": 1}, "stable": {"requests": 9, "errors": 0}}\n{"t": 20}\n'
    )
    result = runner.invoke(app, ["replay", str(trace)])
    assert result.exit_code == 2
    assert f"{trace}:2: canary: must be an object with requests and errors" in result.output


def test_cli_needs_traces_or_prometheus() -> None:
    result = runner.invoke(app, ["replay"])
    assert result.exit_code == 2
    assert "traces: give at least one trace file, or --prometheus" in result.output


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1]", "each line must be a JSON object"),
        ('{"canary": {}, "stable": {}}', "t: must be a number"),
        (
            '{"t": 1, "canary": {"requests": 2, "errors": 3}, "stable": {"requests": 1}}',
            "canary.errors: 3 errors out of 2",
        ),
        ('{"t": 1, "canary": {"requests": -1}, "stable": {"requests": 1}}', "canary.requests: must be a whole number"),
        (
            '{"t": 1, "canary": {"requests": 5, "buckets": {"100": 3, "+Inf": 4}}, "stable": {"requests": 1}}',
            "canary.buckets[+Inf]: 4 must equal requests (5)",
        ),
        (
            '{"t": 1, "canary": {"requests": 5, "buckets": {"100": 3, "200": 2}}, "stable": {"requests": 1}}',
            "buckets must be cumulative",
        ),
        (
            '{"t": 1, "canary": {"requests": 5, "buckets": {"soon": 3}}, "stable": {"requests": 1}}',
            "not a bucket boundary",
        ),
    ],
)
def test_bad_lines_name_line_and_field(line: str, message: str) -> None:
    with pytest.raises(TraceError, match="trace:1: .*" if "JSON" in message or "object" in message else "trace:1"):
        parse_trace([line], Dialect.KNATIVE_OPENCENSUS)
    with pytest.raises(TraceError) as error:
        parse_trace([line], Dialect.KNATIVE_OPENCENSUS)
    assert message in str(error.value)


def test_time_must_not_go_back() -> None:
    lines = [
        '{"t": 20, "canary": {"requests": 1}, "stable": {"requests": 1}}',
        '{"t": 10, "canary": {"requests": 1}, "stable": {"requests": 1}}',
    ]
    with pytest.raises(TraceError, match="trace:2: t: 10 goes back in time"):
        parse_trace(lines, Dialect.KNATIVE_OPENCENSUS)


def test_le_is_read_in_the_dialects_unit_and_written_back_the_same() -> None:
    line = '{"t": 1, "canary": {"requests": 4, "buckets": {"0.1": 3, "+Inf": 4}}, "stable": {"requests": 2}}'
    (interval,) = parse_trace([line], Dialect.KNATIVE_OTEL)
    assert interval.canary.buckets == ((100.0, 3),)
    record = trace_record(interval.t, interval.canary, interval.stable, Dialect.KNATIVE_OTEL)
    assert record["canary"]["buckets"] == {"0.1": 3, "+Inf": 4}
    assert parse_trace([json.dumps(record)], Dialect.KNATIVE_OTEL) == [interval]


def test_guardrails_are_replayed_with_their_minimum_sample() -> None:
    policy = load_policy("default", {"guardrails": {"min_success_rate": 99, "min_requests": 100}})
    quiet = TraceInterval(10, RevisionCounts.of(50, 1), RevisionCounts.of(950, 5))
    busy = TraceInterval(20, RevisionCounts.of(200, 4), RevisionCounts.of(800, 8))
    assert replay(policy, [quiet]).decision == "no_rollback"  # 50 requests: the guardrail is not judged
    assert (replay(policy, [quiet, busy]).decision, replay(policy, [quiet, busy]).t) == ("rollback", 20)

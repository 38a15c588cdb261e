"""The `autocanary` command line, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def test_help_lists_the_command_groups() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in ("policy", "rollout", "api", "sandbox", "replay", "worker", "scheduler", "demo"):
        assert group in result.output


def test_policy_list_shows_every_built_in() -> None:
    result = runner.invoke(app, ["policy", "list"])
    assert result.exit_code == 0
    for name in ("default", "conservative", "fast", "demo"):
        assert name in result.output
    assert "30s-2m30s" in result.output  # default's steps end early; the others' are fixed
    assert "5m " in result.output and "30s-5m" not in result.output


def test_policy_show_prints_the_resolved_policy_as_json() -> None:
    result = runner.invoke(app, ["policy", "show", "fast", "--json"])
    assert result.exit_code == 0
    shown = json.loads(result.output)
    assert shown["steps"] == [10, 30, 60]
    assert shown["step_min_duration"] == "1m"


def test_policy_show_of_an_unknown_name_fails_with_the_list() -> None:
    result = runner.invoke(app, ["policy", "show", "nope"])
    assert result.exit_code == 1
    assert "built-ins are: conservative, default, demo, fast" in result.output


def test_policy_validate_accepts_a_good_file(tmp_path: Path) -> None:
    file = tmp_path / "checkout.yaml"
    file.write_text("extends: default\nsteps: [10, 50]\nguardrails:\n  max_p99_ms: 300\n")
    result = runner.invoke(app, ["policy", "validate", str(file), "--json"])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_policy_validate_names_every_bad_field(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text("extends: default\nsteps: [50, 10]\nintervall: 5s\n")
    result = runner.invoke(app, ["policy", "validate", str(file)])
    assert result.exit_code == 1
    assert "steps: must be strictly increasing" in result.output
    assert "intervall: unknown field; did you mean 'interval'?" in result.output


def test_policy_validate_reports_broken_yaml_and_missing_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps: [5, 10\n")
    result = runner.invoke(app, ["policy", "validate", str(broken)])
    assert result.exit_code == 1 and "not valid YAML" in result.output
    result = runner.invoke(app, ["policy", "validate", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1 and "cannot read" in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param(["test"], "name the Knative SERVICE, --istio", id="nothing-to-roll-out"),
        pytest.param(["test", "reviews", "--istio", "reviews"], "not both", id="service-and-istio"),
        pytest.param(
            ["test", "--istio", "reviews", "--stable-subset", "v1"], "needs --stable-subset and", id="one-subset"
        ),
        pytest.param(
            ["test", "checkout", "--canary-subset", "v2"], "--canary-subset goes with --istio", id="subset-alone"
        ),
        pytest.param(["test", "shop", "--http-route", "shop"], "one of a Knative SERVICE", id="service-and-route"),
        pytest.param(
            ["test", "--http-route", "shop", "--canary-backend", "shop-v2"], "needs --stable-backend", id="one-backend"
        ),
        pytest.param(["test", "shop", "--rule", "main"], "--rule goes with --http-route", id="rule-alone"),
    ],
)
def test_rollout_create_refuses_targets_it_cannot_name(arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(
        app, ["rollout", "create", *arguments, "--token", "t", "--server", "http://127.0.0.1:9"]
    )
    assert result.exit_code == 2
    assert message in result.output

"""The README against the code: its configuration tables against the settings the processes
really read, its custom metrics examples against the policy model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic_settings import BaseSettings

from analyzer.dialects import queries_for
from api.settings import ApiSettings
from policies import parse_policy_document
from rollouts.counts import RevisionRef
from workers.settings import WorkerSettings

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
DOCUMENTED = set(re.findall(r"`(AUTOCANARY_[A-Z0-9_]+)`", README))


@pytest.mark.parametrize("settings", [ApiSettings, WorkerSettings], ids=["api", "workers"])
def test_every_setting_is_in_the_readme(settings: type[BaseSettings]) -> None:
    prefix = settings.model_config.get("env_prefix", "")
    variables = {f"{prefix}{name}".upper() for name in settings.model_fields}
    assert variables - DOCUMENTED == set()


def test_the_readme_names_no_setting_that_does_not_exist() -> None:
    read = {f"AUTOCANARY_{name}".upper() for s in (ApiSettings, WorkerSettings) for name in s.model_fields}
    # Read outside the settings classes: by the CLI (server, token, watch) and by tests' fixtures.
    elsewhere = {name for name in DOCUMENTED if _mentioned_in_code(name)}
    assert DOCUMENTED - read - elsewhere == set()


def _mentioned_in_code(variable: str) -> bool:
    root = Path(__file__).parents[2]
    return any(
        variable in path.read_text(encoding="utf-8")
        for package in ("api", "cli", "workers", "adapters", "analyzer", "sandbox")
        for path in (root / package).rglob("*.py")
    )


def _yaml_blocks_with(word: str) -> list[str]:
    return [block for block in re.findall(r"```yaml\n(.*?)```", README, re.DOTALL) if word in block]


@pytest.mark.parametrize("block", _yaml_blocks_with("custom_metrics"), ids=lambda block: block.split("\n", 1)[0][:40])
def test_every_custom_metrics_example_in_the_readme_is_a_valid_policy(block: str) -> None:
    document = yaml.safe_load(block)
    policy = parse_policy_document({"extends": "default", **document}, source="README")
    assert policy.custom_metrics is not None and policy.dialect == "custom"
    query = queries_for(policy.custom_metrics).counts_query([RevisionRef("shop", "shop-canary")], 10)
    assert "$" not in query.replace('"$1"', "")  # every placeholder filled


def test_the_readme_shows_the_custom_dialect_of_two_gateway_implementations() -> None:
    assert len(_yaml_blocks_with("custom_metrics")) >= 3  # the generic example, Istio's and Contour's

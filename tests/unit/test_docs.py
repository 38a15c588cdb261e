"""The README's configuration tables against the settings the processes really read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from api.settings import ApiSettings
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

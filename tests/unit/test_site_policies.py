"""An installation's own policies: a directory of YAML files (a mounted ConfigMap) beside the built-ins."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from api.site_policies import SitePolicyError, read_site_policies
from policies import InvalidPolicy, check_site_policies, load_policy, policy_names


def write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(text, encoding="utf-8")


def test_site_policies_extend_built_ins_and_each_other(tmp_path: Path) -> None:
    write(tmp_path, "payments.yaml", "extends: conservative\nmin_requests_per_step: 500\n")
    write(tmp_path, "payments-eu.yml", "extends: payments\nsteps: [1, 5, 20]\n")
    (tmp_path / "..data").mkdir()  # what a ConfigMap volume holds beside its keys
    write(tmp_path, "README.txt", "not a policy")
    site = read_site_policies(tmp_path)
    assert sorted(site) == ["payments", "payments-eu"]
    eu = load_policy("payments-eu", site=site)
    conservative = load_policy("conservative")
    assert eu.name == "payments-eu" and eu.steps == (1, 5, 20)
    assert eu.min_requests_per_step == 500
    assert eu.step_min_duration == conservative.step_min_duration
    assert {"default", "payments", "payments-eu"} <= set(policy_names(site))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"default.yaml": "steps: [50]\n"}, "'default' is a built-in policy"),
        ({"x.yaml": "extends: nope\n"}, "unknown policy 'nope'"),
        ({"x.yaml": "extends: y\n", "y.yaml": "extends: x\n"}, "cycle"),
        ({"x.yaml": "steps: [50, 10]\n"}, "steps"),
        ({"x.yaml": "- a list\n"}, "must hold a mapping"),
        ({"x.yaml": "steps: [1\n"}, "cannot be read as YAML"),
        ({"x.yaml": "steps: [5]\n", "x.yml": "steps: [5]\n"}, "defined by two files"),
    ],
)
def test_a_bad_site_policy_stops_start_up_naming_the_file_or_field(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        write(tmp_path, name, text)
    with pytest.raises(SitePolicyError, match=message):
        read_site_policies(tmp_path)


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(SitePolicyError, match="is not a directory"):
        read_site_policies(tmp_path / "absent")
    assert read_site_policies(None) == {}


def test_check_site_policies_resolves_each_one() -> None:
    resolved = check_site_policies({"slow": {"extends": "default", "step_min_duration": "10m"}})
    assert resolved["slow"].step_min_duration == timedelta(minutes=10)
    with pytest.raises(InvalidPolicy, match="alpha_errors"):
        check_site_policies({"bad": {"alpha_errors": 2}})

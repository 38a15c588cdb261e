"""The Dockerfile and the manifests agree: every shipped package is copied in, the user the pods
run as is the image's, and the entrypoint is the `autocanary` command the Deployments pass
arguments to. (Building the image needs a registry this CI does not reach; this is the static part.)"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from setuptools import find_packages  # type: ignore[import-untyped]

from tests.deploy.kustomize import render

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_every_shipped_package_is_copied_into_the_image() -> None:
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = {pattern.removesuffix("*") for pattern in found["include"]}
    copied = set(re.findall(r"^COPY (\w+)/ \1/$", DOCKERFILE, re.MULTILINE))
    assert copied == packages
    assert "COPY pyproject.toml constraints.txt README.md ./" in DOCKERFILE
    assert "-c constraints.txt" in DOCKERFILE  # the versions CI tested


def test_the_image_runs_as_the_user_the_pods_require() -> None:
    (user,) = re.findall(r"^USER (\d+):(\d+)$", DOCKERFILE, re.MULTILINE)
    assert user == ("10001", "10001")
    assert 'ENTRYPOINT ["autocanary"]' in DOCKERFILE
    objects = render(ROOT / "deploy" / "overlays" / "bundled-redis")
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert str(pod["securityContext"]["runAsUser"]) == user[0]
        assert pod["containers"][0]["args"][0] in {"api", "worker", "scheduler"}


def test_the_build_context_leaves_out_what_the_image_does_not_need() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv/", ".git/", "tests/"} <= set(ignored)


def test_the_install_the_image_runs_ships_every_subpackage_and_the_dashboard_files() -> None:
    setuptools_config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = set(find_packages(where=str(ROOT), include=setuptools_config["packages"]["find"]["include"]))
    for top in ("rollouts", "policies", "analyzer", "adapters", "workers", "api", "cli", "sandbox", "bench"):
        packages = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / top).rglob("__init__.py")}
        assert packages <= shipped, sorted(packages - shipped)
    assert "tests" not in shipped
    data = setuptools_config["package-data"]
    assert data["policies"] == ["builtin/*.yaml"] and data["api.ui"] == ["static/*"]
    assert {p.name for p in (ROOT / "api" / "ui" / "static").iterdir()} >= {
        "index.html",
        "app.js",
        "chart.js",
        "app.css",
    }

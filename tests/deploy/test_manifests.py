"""`deploy/`: every overlay renders, every object is valid Kubernetes (offline schemas), the RBAC
grants exactly what the router needs, and the pods run locked down with working probes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from api.settings import ApiSettings
from api.site_policies import read_site_policies
from tests.deploy.kustomize import Object, compose, kubectl, render
from workers.settings import WorkerSettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
OVERLAYS = sorted(p for p in (DEPLOY / "overlays").iterdir() if (p / "kustomization.yaml").exists())
KUBERNETES_VERSION = "1.32.0"  # the oldest Kubernetes Knative 1.19 supports
ALLOWED_RBAC = (
    {("serving.knative.dev", "services", verb) for verb in ("get", "list", "watch", "patch", "update")}
    | {("serving.knative.dev", "revisions", verb) for verb in ("get", "list", "watch")}
    | {("networking.istio.io", "virtualservices", verb) for verb in ("get", "list", "watch", "patch", "update")}
    | {("networking.istio.io", "destinationrules", verb) for verb in ("get", "list", "watch")}
    | {("apps", "deployments", verb) for verb in ("get", "list", "watch")}
    | {("gateway.networking.k8s.io", "httproutes", verb) for verb in ("get", "list", "watch", "patch")}
    | {("", "services", "get")}
    | {("", "events", "create")}
)
USER_CREATED_SECRETS = {"autocanary-tokens", "autocanary-redis"}
"""Secrets the README tells operators to create (templates are shipped, real values never)."""


@pytest.fixture(scope="module", params=[p.name for p in OVERLAYS])
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Object]]:
    return request.param, render(DEPLOY / "overlays" / request.param)


def _of(objects: list[Object], *kinds: str) -> list[Object]:
    return [o for o in objects if o["kind"] in kinds]


def _pods(objects: list[Object]) -> Iterator[tuple[Object, dict[str, Any]]]:
    for workload in _of(objects, "Deployment", "StatefulSet"):
        yield workload, workload["spec"]["template"]["spec"]


def test_every_overlay_exists() -> None:
    assert {p.name for p in OVERLAYS} == {"bundled-redis", "external-redis", "sentinel-redis"}


def test_every_object_is_valid_against_the_kubernetes_schemas(overlay: tuple[str, list[Object]]) -> None:
    _, objects = overlay
    assert objects
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")


def test_the_token_secret_template_is_valid_and_holds_no_real_token() -> None:
    (secret,) = yaml.safe_load_all((DEPLOY / "base" / "tokens.secret.example.yaml").read_text())
    kubernetes_validate.validate(secret, KUBERNETES_VERSION, strict=True)
    tokens = yaml.safe_load(secret["stringData"]["tokens.yaml"])
    assert {t["role"] for t in tokens} == {"viewer", "deployer", "operator"}
    assert all(t["token"].startswith("REPLACE-") for t in tokens)


def test_rbac_grants_nothing_beyond_what_the_router_needs(overlay: tuple[str, list[Object]]) -> None:
    _, objects = overlay
    granted = set()
    for role in _of(objects, "ClusterRole", "Role"):
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule and "resourceNames" not in rule, rule
            granted |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert granted == ALLOWED_RBAC
    bindings = _of(objects, "ClusterRoleBinding", "RoleBinding")
    assert [(b["roleRef"]["name"], b["subjects"]) for b in bindings] == [
        ("autocanary", [{"kind": "ServiceAccount", "name": "autocanary", "namespace": "autocanary"}])
    ]
    accounts = {a["metadata"]["name"]: a for a in _of(objects, "ServiceAccount")}
    scheduler = next(pod for w, pod in _pods(objects) if w["metadata"]["name"] == "autocanary-scheduler")
    assert scheduler["serviceAccountName"] == "autocanary-scheduler"
    assert accounts["autocanary-scheduler"]["automountServiceAccountToken"] is False  # it never calls Kubernetes


def test_pods_run_locked_down_with_resources(overlay: tuple[str, list[Object]]) -> None:
    _, objects = overlay
    for workload, pod in _pods(objects):
        name = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert "memory" in container["resources"]["limits"], name
            assert container.get("livenessProbe") and container.get("readinessProbe"), name


def test_autocanary_probes_hit_health_endpoints_on_declared_ports(overlay: tuple[str, list[Object]]) -> None:
    _, objects = overlay
    autocanary = [(w, pod) for w, pod in _pods(objects) if w["metadata"]["name"] != "autocanary-redis"]
    assert {w["metadata"]["name"] for w, _ in autocanary} == {
        "autocanary-api",
        "autocanary-worker",
        "autocanary-scheduler",
    }
    for workload, pod in autocanary:
        (container,) = pod["containers"]
        ports = {p["name"] for p in container["ports"]}
        live, ready = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
        assert live["path"] == "/healthz" and ready["path"].startswith("/readyz"), workload["metadata"]["name"]
        assert {live["port"], ready["port"]} <= ports
        assert container["image"].startswith("ghcr.io/autocanary/autocanary:")


def test_references_resolve_to_rendered_objects(overlay: tuple[str, list[Object]]) -> None:
    _, objects = overlay
    config_maps = {c["metadata"]["name"] for c in _of(objects, "ConfigMap")}
    accounts = {a["metadata"]["name"] for a in _of(objects, "ServiceAccount")}
    secrets = {s["metadata"]["name"] for s in _of(objects, "Secret")} | USER_CREATED_SECRETS
    for workload, pod in _pods(objects):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pod.get("serviceAccountName", "default") in accounts | {"default"}
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                assert ref is None or ref["name"] in secrets
        for volume in pod.get("volumes", []):
            assert volume.get("configMap", {}).get("name", next(iter(config_maps))) in config_maps
            assert volume.get("secret", {}).get("secretName", next(iter(secrets))) in secrets
    for service in _of(objects, "Service"):
        selector = service["spec"]["selector"].items()
        assert any(selector <= w["spec"]["template"]["metadata"]["labels"].items() for w, _ in _pods(objects))


def test_every_setting_in_the_config_map_is_one_the_processes_read(overlay: tuple[str, list[Object]]) -> None:
    name, objects = overlay
    (config,) = [c for c in _of(objects, "ConfigMap") if c["metadata"]["name"] == "autocanary-config"]
    known = {f"AUTOCANARY_{field.upper()}" for field in {*WorkerSettings.model_fields, *ApiSettings.model_fields}}
    known |= {"AUTOCANARY_HEALTH_PORT", "AUTOCANARY_LOG_LEVEL"}  # read by the CLI (worker/scheduler, api)
    assert set(config["data"]) <= known, set(config["data"]) - known
    redis_url = config["data"].get("AUTOCANARY_REDIS_URL")
    if name == "bundled-redis":
        assert redis_url == "redis://autocanary-redis.autocanary.svc:6379/0"
        (redis,) = _of(objects, "StatefulSet")
        args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--appendonly") + 1] == "yes"
    elif name == "sentinel-redis":
        (redis,) = _of(objects, "StatefulSet")
        pod = redis["spec"]["template"]["spec"]
        script = pod["initContainers"][0]["command"][-1]
        sentinels = config["data"]["AUTOCANARY_REDIS_SENTINELS"].split(",")
        master = config["data"]["AUTOCANARY_REDIS_MASTER_NAME"]
        assert redis["spec"]["replicas"] == len(sentinels) == 3
        assert f"sentinel monitor {master} $primary 6379 2" in script  # a quorum of two of three
        assert f"get-master-addr-by-name {master}" in script  # a restarted pod asks before it starts
        assert subprocess.run(["sh", "-n", "-c", script], check=False).returncode == 0  # noqa: S603, S607
        assert int(config["data"]["AUTOCANARY_REDIS_WAIT_REPLICAS"]) == 1  # one of the two replicas
        args = {c["name"]: c["args"] for c in pod["containers"]}
        assert args["redis"][args["redis"].index("--appendonly") + 1] == "yes"
        assert args["sentinel"] == ["redis-sentinel", "/config/sentinel.conf"]
        ports = {p["port"] for s in _of(objects, "Service") for p in s["spec"]["ports"]}
        assert all(int(address.rpartition(":")[2]) in ports for address in sentinels)
    else:
        assert redis_url is None  # from the Secret, on every process
        for _, pod in _pods(objects):
            env = {v["name"]: v for v in pod["containers"][0].get("env", [])}
            assert env["AUTOCANARY_REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "autocanary-redis"


def test_the_shipped_site_policies_are_valid(tmp_path: Path, overlay: tuple[str, list[Object]]) -> None:
    _, objects = overlay
    (policies,) = [c for c in _of(objects, "ConfigMap") if c["metadata"]["name"] == "autocanary-policies"]
    for file_name, text in policies["data"].items():
        (tmp_path / file_name).write_text(text)
    assert set(read_site_policies(tmp_path)) == {Path(f).stem for f in policies["data"]}


@pytest.mark.skipif(kubectl() is None, reason="kubectl is not installed: the Python composer is the renderer")
@pytest.mark.parametrize("name", [p.name for p in OVERLAYS])
def test_the_python_composer_agrees_with_kubectl(name: str) -> None:
    def keyed(objects: list[Object]) -> dict[tuple[str, str], Object]:
        return {(o["kind"], o["metadata"]["name"]): o for o in objects}

    assert keyed(compose(DEPLOY / "overlays" / name)) == keyed(render(DEPLOY / "overlays" / name))

"""The shipped Prometheus integration: `promtool check config` accepts the scrape config, the OTLP
settings promote exactly the attributes the knative-otel dialect queries, and the operator
monitors point at the ports the workloads really expose."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from analyzer.dialects import DIALECTS
from policies import Dialect
from tests.deploy.kustomize import render

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
OVERLAY = PROMETHEUS.parent / "overlays" / "bundled-redis"
KUBERNETES_META = {
    "pod": {
        "__meta_kubernetes_namespace",
        "__meta_kubernetes_pod_name",
        "__meta_kubernetes_pod_container_name",
        "__meta_kubernetes_pod_container_port_name",
        "__meta_kubernetes_pod_container_port_number",
    },
    "endpoints": {
        "__meta_kubernetes_namespace",
        "__meta_kubernetes_service_name",
        "__meta_kubernetes_endpoint_port_name",
        "__meta_kubernetes_pod_name",
    },
}
"""The discovery labels of Prometheus's Kubernetes SD that the shipped relabelling may use."""
WITHOUT_KUBERNETES_SD = "field kubernetes_sd_configs not found"


def _promtool(path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool comes with the Debian prometheus package that make bootstrap installs"
    return subprocess.run(  # noqa: S603 (fixed arguments)
        [binary, "check", "config", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_accepts_the_scrape_config(tmp_path: Path) -> None:
    shipped = PROMETHEUS / "prometheus.yml"
    checked = _promtool(shipped)
    if checked.returncode == 0:
        return
    # Debian builds Prometheus without Kubernetes service discovery, so its promtool does not know
    # the field. Then everything else is checked by promtool on the same file with each Kubernetes
    # SD block swapped for a static target, and the SD blocks themselves by the next test.
    output = checked.stdout + checked.stderr
    assert WITHOUT_KUBERNETES_SD in output, output
    config = yaml.safe_load(shipped.read_text())
    for job in config["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": ["127.0.0.1:9091"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    rechecked = _promtool(tmp_path / "prometheus.yml")
    assert rechecked.returncode == 0, rechecked.stdout + rechecked.stderr


def test_kubernetes_discovery_keeps_queue_proxy_user_metrics_and_the_api() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"knative-queue-proxy", "autocanary"}
    for job in jobs.values():
        (discovery,) = job["kubernetes_sd_configs"]
        available = KUBERNETES_META[discovery["role"]]
        for rule in job["relabel_configs"]:
            assert set(rule["source_labels"]) <= available, rule
    keep = _keep_rule(jobs["knative-queue-proxy"])
    assert keep == (
        ["__meta_kubernetes_pod_container_name", "__meta_kubernetes_pod_container_port_name"],
        "queue-proxy;http-usermetric",
    )
    keep = _keep_rule(jobs["autocanary"])
    assert keep == (["__meta_kubernetes_service_name", "__meta_kubernetes_endpoint_port_name"], "autocanary-api;http")
    api_service = next(
        o for o in render(OVERLAY) if o["kind"] == "Service" and o["metadata"]["name"] == "autocanary-api"
    )
    assert [p["name"] for p in api_service["spec"]["ports"]] == ["http"]
    assert jobs["autocanary"]["kubernetes_sd_configs"][0]["namespaces"]["names"] == [
        api_service["metadata"]["namespace"]
    ]


def _keep_rule(job: dict[str, Any]) -> tuple[list[str], str]:
    (keep,) = [rule for rule in job["relabel_configs"] if rule.get("action") == "keep"]
    return keep["source_labels"], keep["regex"]


def test_otlp_promotes_the_resource_attributes_the_otel_dialect_queries() -> None:
    promoted = yaml.safe_load((PROMETHEUS / "otlp.yml").read_text())["otlp"]["promote_resource_attributes"]
    dialect = DIALECTS[Dialect.KNATIVE_OTEL]
    # OTLP translation turns dots into underscores: kn.revision.name -> kn_revision_name.
    labels = {attribute.replace(".", "_") for attribute in promoted}
    assert {dialect.namespace_label, dialect.revision_label} <= labels


def test_operator_monitors_point_at_real_ports() -> None:
    (pod_monitor,) = yaml.safe_load_all((PROMETHEUS / "podmonitor.yaml").read_text())
    (service_monitor,) = yaml.safe_load_all((PROMETHEUS / "servicemonitor.yaml").read_text())
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http-usermetric"  # queue-proxy :9091
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    api_service = next(
        o for o in render(OVERLAY) if o["kind"] == "Service" and o["metadata"]["name"] == "autocanary-api"
    )
    selector = service_monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= api_service["metadata"]["labels"].items()
    assert service_monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in api_service["spec"]["ports"]}
    assert service_monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    for monitor, kind in ((pod_monitor, "PodMonitor"), (service_monitor, "ServiceMonitor")):
        assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", kind)
        assert monitor["metadata"]["namespace"] == api_service["metadata"]["namespace"]

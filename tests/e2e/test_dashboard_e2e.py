"""Every PromQL expression of deploy/grafana/autocanary.json against a real Prometheus scraping a
running autocanary API, while a real rollout runs (sandbox, Redis, API, worker, scheduler).

Each expression must parse and evaluate; those about rollouts must return data for the running
rollout, and after an abort the abort-latency panel must too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from sandbox.cluster import Endpoints
from sandbox.processes import BackgroundLoad, Processes
from sandbox.prometheus import PrometheusServer, free_port
from tests.deploy.dashboard import queries
from tests.knative import create, custom_objects, hello_service, new_revision, service_ready, wait_for

pytestmark = pytest.mark.slow
DEPLOYER, OPERATOR = "deploy-secret", "operate-secret"


@dataclass
class Running:
    api: str
    prometheus: PrometheusServer

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.prometheus.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        assert answer.status_code == 200 and body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


@pytest.fixture(scope="module")
def running(sandbox: Endpoints, redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    base = tmp_path_factory.mktemp("dashboard")
    port = free_port()
    env = {
        "AUTOCANARY_REDIS_URL": redis_server,
        "AUTOCANARY_REDIS_PREFIX": f"dashboard-{uuid.uuid4().hex[:6]}",
        "AUTOCANARY_KUBECONFIG": sandbox.kubeconfig,
        "AUTOCANARY_PROMETHEUS_URL": sandbox.prometheus or "",
        "AUTOCANARY_TOKENS": f"pipeline:deployer:{DEPLOYER},oncall:operator:{OPERATOR}",
        "AUTOCANARY_METRICS_LAG_SECONDS": "1",
        "AUTOCANARY_METRICS_MIN_WINDOW_SECONDS": "2",
    }
    processes = Processes(env, base)
    # A Prometheus of its own scraping the API, as deploy/prometheus/prometheus.yml's `autocanary` job does.
    prometheus = PrometheusServer(base / "prometheus", [f"127.0.0.1:{port}"])
    try:
        processes.start("api", ["api", "--port", str(port)])
        processes.start("worker", ["worker"])
        processes.start("scheduler", ["scheduler"])
        api = f"http://127.0.0.1:{port}"
        wait_for(lambda: _up(f"{api}/healthz"), 30, "the API")
        prometheus.start()
        yield Running(api, prometheus)
    finally:
        prometheus.stop()
        processes.stop_all()


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_every_dashboard_query_runs_and_rollout_panels_show_the_running_rollout(
    running: Running, sandbox: Endpoints, namespace: str
) -> None:
    api = custom_objects(sandbox)
    create(api, namespace, hello_service("shop", "v1"))
    service_ready(api, namespace, "shop", "shop-00001")
    new_revision(api, namespace, "shop", "v2", pin="shop-00001")
    service_ready(api, namespace, "shop", "shop-00002")
    load = BackgroundLoad(sandbox.gateway, [f"shop.{namespace}.example.com"], rate=40)
    pipeline = httpx.Client(base_url=running.api, headers={"Authorization": f"Bearer {DEPLOYER}"}, timeout=10)
    oncall = httpx.Client(base_url=running.api, headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=10)
    try:
        overrides = {"steps": [10, 50], "step_min_duration": "300s", "interval": "1s", "min_requests_per_step": 10}
        registered = pipeline.post(
            "/v1/rollouts", json={"namespace": namespace, "service": "shop", "policy_overrides": overrides}
        )
        assert registered.status_code == 201, registered.text
        rollout_id = registered.json()["id"]

        def judged() -> bool:
            rollout: dict[str, Any] = pipeline.get(f"/v1/rollouts/{rollout_id}").json()
            return bool(rollout["phase"] == "progressing" and rollout["checks"]["passed"] >= 2)

        wait_for(judged, 60, "the rollout to be progressing with verdicts")
        wait_for(
            lambda: running.query(f'autocanary_evidence{{rollout="{rollout_id}"}}'), 20, "Prometheus to scrape the API"
        )
        for query in queries():
            result = running.query(query.with_variables(namespace))  # parses and evaluates, or the query fails
            if query.about_rollouts:
                assert result, f"{query.panel}: {query.expr} returned nothing while a rollout runs"
        (weight,) = running.query(f'autocanary_canary_weight{{namespace="{namespace}"}}')
        assert (weight["metric"]["rollout"], weight["value"][1]) == (rollout_id, "10")
        active = running.query(next(q.expr for q in queries() if q.panel == "Active rollouts"))
        assert float(active[0]["value"][1]) >= 1

        aborted = oncall.post(f"/v1/rollouts/{rollout_id}/abort", json={"reason": "dashboard test"})
        assert aborted.status_code == 202, aborted.text
        wait_for(lambda: pipeline.get(f"/v1/rollouts/{rollout_id}").json()["phase"] == "aborted", 30, "the abort")
        wait_for(lambda: running.query("autocanary_abort_latency_seconds_count > 0"), 20, "an abort latency sample")
        for panel in ("Abort latency", "Tick lateness", "Ended rollouts by outcome"):
            expr = next(q.expr for q in queries() if q.panel == panel)
            assert running.query(expr), f"{panel}: {expr} returned nothing"
        ended = running.query(next(q.expr for q in queries() if q.panel == "Ended rollouts by outcome"))
        assert "aborted" in {series["metric"]["phase"] for series in ended}
    finally:
        load.stop()
        pipeline.close()
        oncall.close()

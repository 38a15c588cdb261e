"""The Grafana dashboard is well formed and asks only for series autocanary's /metrics exposes,
by labels those series carry (the end-to-end test runs every query against a real Prometheus)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from adapters.redis_store import RolloutStore
from api.app import create_app
from api.deps import Dependencies
from api.settings import ApiSettings
from tests.deploy.dashboard import load, queries
from tests.fakes import FakeCluster


def test_panels_have_unique_ids_a_place_and_the_datasource_variable() -> None:
    dashboard = load()
    panels = dashboard["panels"]
    assert isinstance(panels, list)
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]) and panel["targets"], panel["title"]
        assert panel["description"], panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}  # type: ignore[index]
    assert variables == {"datasource", "namespace"}


def test_the_panels_cover_what_on_call_needs() -> None:
    metrics = set().union(*(q.metrics for q in queries()))
    assert {
        "autocanary_rollouts",
        "autocanary_canary_weight",
        "autocanary_evidence",
        "autocanary_checks",
        "autocanary_tick_lateness_seconds",
        "autocanary_abort_latency_seconds",
    } <= metrics


def test_every_series_and_legend_label_exists_on_the_api_metrics(store: RolloutStore) -> None:
    cluster = FakeCluster()
    cluster.add("shop", "checkout", {"checkout-00001": 0.0, "checkout-00002": 0.0})
    app = create_app(
        ApiSettings(tokens="ci:deployer:s3cret"), Dependencies(store, cluster.backends(), lambda *_: None, {})
    )
    with TestClient(app) as client:
        registered = client.post(
            "/v1/rollouts",
            json={"namespace": "shop", "service": "checkout"},
            headers={"Authorization": "Bearer s3cret"},
        )
        assert registered.status_code == 201, registered.text
        rollout = store.get(registered.json()["id"])
        assert rollout is not None  # judged once, so that its evidences are series too
        store.save(rollout.with_evidence(2.0, 3.0), token=None, next_tick=None)
        exposition = client.get("/metrics").text
    labels_of: dict[str, set[str]] = {}
    for line in exposition.splitlines():
        if match := re.match(r"^(autocanary_[a-z_]+)(?:\{(.*)\})? ", line):
            labels_of.setdefault(match[1], set()).update(re.findall(r'(\w+)="', match[2] or ""))
    for query in queries():
        for metric in query.metrics:
            assert metric in labels_of, (query.panel, metric)
        used = set(re.findall(r"\{\{(\w+)\}\}", query.legend))
        available = set().union(*(labels_of[m] for m in query.metrics))
        assert used <= available, (query.panel, used - available)

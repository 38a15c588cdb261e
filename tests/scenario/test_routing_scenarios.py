"""The runner with Gateway API rollouts and Knative tag steps, tick by tick on the in-memory fakes:
one runner, each rollout's target and router picked by its kind, match steps first, the final
write taking every managed route out."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from policies import load_policy
from rollouts import Phase, Rollout
from rollouts.actions import RequestMatch
from rollouts.log import LogEntry
from rollouts.ports import Backends, KindBackends
from tests.factories import T0
from tests.fakes import Clock, FakeCluster, FakeMetrics, MemoryStore
from workers.runner import Runner

POLICY: dict[str, Any] = {
    "steps": [25, 50],
    "step_min_duration": "5s",
    "interval": "1s",
    "min_requests_per_step": 20,
    "progress_deadline": "10s",
}
CUSTOM = {
    "dialect": "custom",
    "custom_metrics": {
        "requests": 'sum by (namespace, version, code)(increase(http_requests_total{version=~"$versions"}[$window]))'
    },
}
NS = "shop"


class Routes:
    """A Knative cluster that routes by tag and a Gateway API one, behind one runner."""

    def __init__(self) -> None:
        self.clock = Clock(T0)
        self.store = MemoryStore(self.clock)
        self.knative = FakeCluster(match_fields=frozenset({"tag"}))
        self.gateway = FakeCluster(match_fields=frozenset({"header", "cookie", "uri", "query", "method"}))
        backends = Backends(
            {
                "knative": KindBackends(self.knative, self.knative, self.knative),
                "gateway-api": KindBackends(self.gateway, self.gateway, self.gateway),
            }
        )
        self.metrics = FakeMetrics(self.knative, others=(self.gateway,))
        self.runner = Runner(self.store, backends, self.metrics, owner="w", lease_ms=5000, clock=self.clock)

    def register(self, kind: str, canary_error: float = 0.005, **overrides: Any) -> str:
        cluster, name, stable, canary = (
            (self.gateway, "shop", "shop-stable", "shop-canary")
            if kind == "gateway-api"
            else (self.knative, "checkout", "checkout-00001", "checkout-00002")
        )
        cluster.add(NS, name, {stable: 0.005, canary: canary_error})
        extra = CUSTOM if kind == "gateway-api" else {}
        rollout = Rollout.new(
            id=uuid.uuid4().hex[:12],
            namespace=NS,
            service=name,
            stable_revision=stable,
            canary_revision=canary,
            policy=load_policy("default", {**POLICY, **extra, **overrides}),
            now=self.clock(),
            target_kind="gateway-api" if kind == "gateway-api" else "knative",
            route="main" if kind == "gateway-api" else "",
        )
        self.store.create(rollout, LogEntry("created", "test", self.clock(), "pending"))
        return rollout.id

    def run(self, seconds: int) -> None:
        for _ in range(seconds):
            now = self.clock.advance(1)
            due = self.store.claim_due(now, 100, now + timedelta(seconds=15))
            if due:
                self.runner.tick([rollout_id for rollout_id, _ in due], dict(due))

    def get(self, rollout_id: str) -> Rollout:
        found = self.store.get(rollout_id)
        assert found is not None
        return found


@pytest.fixture
def routes() -> Routes:
    return Routes()


BETA = {"match": {"headers": {"x-group": {"exact": "beta"}}, "method": "GET"}}


def test_a_gateway_api_canary_and_a_knative_tag_step_promote_side_by_side(routes: Routes) -> None:
    gateway = routes.register("gateway-api", steps=[BETA, 25, 50])
    knative = routes.register("knative", steps=[{"match": {"tag": "canary"}}, 50])
    routes.run(60)
    assert (routes.get(gateway).phase, routes.get(knative).phase) == (Phase.SUCCEEDED, Phase.SUCCEEDED)
    assert routes.gateway.matches == [
        ("shop", (RequestMatch("header", "beta", "x-group"), RequestMatch("method", "GET")))
    ]
    assert routes.knative.matches == [("checkout", (RequestMatch("tag", "canary"),))]
    assert [canary for _, _, canary in routes.knative.writes] == [0, 0, 50, 100]
    # Each rollout's last write takes its managed routes (the match rule, the tag) out.
    assert (routes.gateway.final_writes, routes.knative.final_writes) == (["shop"], ["checkout"])
    assert routes.get(knative).target.tag == "canary"


def test_a_bad_gateway_api_canary_is_rolled_back_during_its_match_step(routes: Routes) -> None:
    rollout_id = routes.register("gateway-api", canary_error=0.5, steps=[BETA, 50])
    routes.run(30)
    rollout = routes.get(rollout_id)
    assert rollout.phase is Phase.ROLLED_BACK and "5xx" in rollout.reason
    assert [canary for _, _, canary in routes.gateway.writes] == [0, 0, 0]
    assert routes.gateway.final_writes == ["shop"]

"""The runner with Istio rollouts beside Knative ones, tick by tick on the in-memory fakes: one
runner, one batch, each rollout's target and router picked by its target kind."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from policies import Dialect, load_policy
from rollouts import Phase, Rollout
from rollouts.actions import RequestMatch
from rollouts.log import LogEntry
from rollouts.ports import Backends, KindBackends
from tests.factories import T0
from tests.fakes import Clock, FakeCluster, FakeMetrics, MemoryStore
from workers.runner import Runner

POLICY: dict[str, Any] = {
    "steps": [5, 25, 50],
    "step_min_duration": "5s",
    "interval": "1s",
    "min_requests_per_step": 20,
    "progress_deadline": "10s",
}
NS = "test"


class Mesh:
    """A Knative cluster and an Istio one (each a fake behind the same ports), one runner over both."""

    def __init__(self) -> None:
        self.clock = Clock(T0)
        self.store = MemoryStore(self.clock)
        self.knative = FakeCluster()
        self.istio = FakeCluster(match_fields=frozenset({"header", "cookie", "uri", "query"}))
        backends = Backends(
            {
                "knative": KindBackends(self.knative, self.knative, self.knative),
                "istio": KindBackends(self.istio, self.istio, self.istio),
            }
        )
        self.metrics = FakeMetrics(self.knative, others=(self.istio,))
        self.runner = Runner(self.store, backends, self.metrics, owner="w", lease_ms=5000, clock=self.clock)

    def istio_rollout(self, canary_error: float = 0.005, **overrides: Any) -> str:
        self.istio.add(NS, "reviews", {"v1": 0.005, "v2": canary_error})
        rollout = Rollout.new(
            id=uuid.uuid4().hex[:12],
            namespace=NS,
            service="reviews",
            stable_revision="v1",
            canary_revision="v2",
            policy=load_policy("default", {**POLICY, "dialect": "istio", **overrides}),
            now=self.clock(),
            target_kind="istio",
            route="primary",
            host="reviews",
        )
        self.store.create(rollout, LogEntry("created", "test", self.clock(), "pending"))
        return rollout.id

    def knative_rollout(self) -> str:
        self.knative.add(NS, "checkout", {"checkout-00001": 0.005, "checkout-00002": 0.005})
        rollout = Rollout.new(
            id=uuid.uuid4().hex[:12],
            namespace=NS,
            service="checkout",
            stable_revision="checkout-00001",
            canary_revision="checkout-00002",
            policy=load_policy("default", POLICY),
            now=self.clock(),
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
def mesh() -> Mesh:
    return Mesh()


def test_an_istio_and_a_knative_canary_promote_side_by_side_in_one_runner(mesh: Mesh) -> None:
    istio, knative = mesh.istio_rollout(), mesh.knative_rollout()
    mesh.run(60)
    assert (mesh.get(istio).phase, mesh.get(knative).phase) == (Phase.SUCCEEDED, Phase.SUCCEEDED)
    # Each was written through its own kind's router, never the other's.
    assert [(name, canary) for name, _, canary in mesh.istio.writes] == [
        ("reviews", 0),
        ("reviews", 5),
        ("reviews", 25),
        ("reviews", 50),
        ("reviews", 100),
    ]
    assert {name for name, _, _ in mesh.knative.writes} == {"checkout"}
    assert mesh.istio.current_split(NS, "reviews") == {"v1": 0, "v2": 100}
    assert mesh.get(istio).policy.dialect is Dialect.ISTIO


def test_a_bad_istio_canary_rolls_back_to_the_stable_subset(mesh: Mesh) -> None:
    rollout_id = mesh.istio_rollout(canary_error=0.2)
    mesh.run(30)
    rollout = mesh.get(rollout_id)
    assert rollout.phase is Phase.ROLLED_BACK
    assert "canary 5xx" in rollout.reason
    assert mesh.istio.current_split(NS, "reviews") == {"v1": 100, "v2": 0}


def test_an_edit_of_the_managed_route_ends_superseded_and_is_left_alone(mesh: Mesh) -> None:
    rollout_id = mesh.istio_rollout()
    mesh.run(8)
    writes = len(mesh.istio.writes)
    mesh.istio.edit(NS, "reviews", {"v1": 50, "v2": 50})
    mesh.run(5)
    rollout = mesh.get(rollout_id)
    assert rollout.phase is Phase.SUPERSEDED
    assert "50 % canary by someone else" in rollout.reason
    assert len(mesh.istio.writes) == writes
    assert mesh.istio.current_split(NS, "reviews") == {"v1": 50, "v2": 50}


JASON = {"match": {"headers": {"end-user": {"exact": "jason"}}}}


def test_a_header_step_sends_only_matching_requests_first_then_weights(mesh: Mesh) -> None:
    rollout_id = mesh.istio_rollout(steps=[JASON, 25, 50])
    mesh.run(60)
    rollout = mesh.get(rollout_id)
    assert rollout.phase is Phase.SUCCEEDED, rollout.reason
    assert [canary for _, _, canary in mesh.istio.writes] == [0, 0, 25, 50, 100]
    assert mesh.istio.matches == [("reviews", (RequestMatch("header", "jason", "end-user"),))]
    steps = [e.message for e in mesh.store.events(rollout_id) if e.kind == "step_advanced"]
    assert steps[0] == "step 1/3: requests with header end-user = jason to v2, the rest to v1"
    assert mesh.istio.services[(NS, "reviews")].match_target == ""  # the weight steps took the route out


def test_a_failed_match_route_write_is_repeated_with_its_matches(mesh: Mesh) -> None:
    rollout_id = mesh.istio_rollout(steps=[JASON, 50])
    mesh.run(1)  # pinned at 100/0
    mesh.istio.failing_writes = 1  # the match step's write fails once
    mesh.run(60)
    assert mesh.get(rollout_id).phase is Phase.SUCCEEDED
    assert mesh.istio.matches == [("reviews", (RequestMatch("header", "jason", "end-user"),))]


def test_a_bad_canary_is_rolled_back_during_its_match_step(mesh: Mesh) -> None:
    rollout_id = mesh.istio_rollout(canary_error=0.5, steps=[JASON, 50])
    mesh.run(30)
    rollout = mesh.get(rollout_id)
    assert rollout.phase is Phase.ROLLED_BACK
    assert [canary for _, _, canary in mesh.istio.writes] == [0, 0, 0]  # never got any weight
    assert mesh.istio.services[(NS, "reviews")].match_target == ""  # and the match route is gone

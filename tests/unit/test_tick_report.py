"""What a tick batch reports about where its time went (logged when a batch is slow)."""

from __future__ import annotations

from tests.factories import T0
from tests.fakes import Clock, MemoryStore
from tests.scenario.test_runner_scenarios import World
from workers.report import TickReport


def test_each_stage_adds_up_and_prints_in_the_order_it_ran() -> None:
    report = TickReport()
    for stage in ("observe", "metrics", "observe"):
        with report.timed(stage):
            pass
    assert list(report.seconds) == ["observe", "metrics"]
    assert report.took == sum(report.seconds.values()) >= 0
    assert report.stages().startswith("observe 0.00s, metrics 0.00s")


def test_a_tick_times_every_stage_it_went_through() -> None:
    clock = Clock(T0)
    world = World(MemoryStore(clock), clock=clock)
    registered = world.register("timed")
    now = clock.advance(1)
    due = world.store.claim_due(now, 10, now)
    assert [rollout_id for rollout_id, _ in due] == [registered]
    report = world.runner.tick([registered], dict(due))
    assert {"leases", "load", "observe", "readiness", "metrics", "save", "writes"} <= set(report.seconds)

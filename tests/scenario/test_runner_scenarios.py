"""The runner tick by tick: fake cluster, metrics and clock; the store real (a private Redis) and
in memory (`tests.fakes.MemoryStore`, the same port), each scenario on both unless it needs Redis."""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
import respx

from adapters.redis_store import RolloutStore
from policies import NotificationKind, NotificationTarget, load_policy
from rollouts import ManualActionKind, Phase, Rollout, SetTraffic
from rollouts.log import LogEntry
from rollouts.ports import TrafficTarget
from tests.factories import T0
from tests.fakes import Clock, FakeCluster, FakeMetrics, MemoryStore
from workers.notify import NotificationDispatcher, OutboxRelay
from workers.report import TickReport
from workers.runner import Runner

POLICY: dict[str, Any] = {
    "steps": [5, 10, 25, 50],
    "step_min_duration": "5s",
    "interval": "1s",
    "min_requests_per_step": 20,
    "progress_deadline": "10s",
    "max_insufficient_duration": "5s",
}
NS = "shop"


@dataclass
class World:
    store: RolloutStore | MemoryStore
    cluster: FakeCluster = field(default_factory=FakeCluster)
    clock: Clock = field(default_factory=lambda: Clock(T0))

    def __post_init__(self) -> None:
        self.metrics = FakeMetrics(self.cluster)
        self.runner = self.make_runner("worker-a")

    def make_runner(self, owner: str) -> Runner:
        return Runner(self.store, self.cluster.backends(), self.metrics, owner=owner, lease_ms=5000, clock=self.clock)

    def register(self, service: str, canary_error: float = 0.005, rps: float = 100.0, **overrides: Any) -> str:
        stable, canary = f"{service}-00001", f"{service}-00002"
        self.cluster.add(NS, service, {stable: 0.005, canary: canary_error}, rps)
        rollout = Rollout.new(
            id=uuid.uuid4().hex[:12],
            namespace=NS,
            service=service,
            stable_revision=stable,
            canary_revision=canary,
            policy=load_policy("default", {**POLICY, **overrides}),
            now=self.clock(),
        )
        self.store.create(rollout, LogEntry("created", "test", self.clock(), "pending"))
        return rollout.id

    def run(self, rollout_id: str, seconds: int) -> Rollout:
        """Advance the clock second by second, ticking whatever is due, as scheduler and worker would."""
        for _ in range(seconds):
            now = self.clock.advance(1)
            due = self.store.claim_due(now, 100, now + timedelta(seconds=15))
            if due:
                self.runner.tick([rollout_id for rollout_id, _ in due], dict(due))
            rollout = self.get(rollout_id)
            if rollout.is_terminal:
                return rollout
        return self.get(rollout_id)

    def get(self, rollout_id: str) -> Rollout:
        found = self.store.get(rollout_id)
        assert found is not None
        return found

    def kinds(self, rollout_id: str) -> list[str]:
        return [event.kind for event in self.store.events(rollout_id)]


@dataclass
class RedisWorld(World):
    """A world whose store is Redis, for scenarios about Redis's own part (heartbeats, the outbox)."""

    store: RolloutStore


@pytest.fixture(params=["redis", "memory"])
def world(request: pytest.FixtureRequest) -> World:
    if request.param == "redis":
        return World(request.getfixturevalue("store"))
    clock = Clock(T0)
    return World(MemoryStore(clock), clock=clock)


@pytest.fixture
def redis_world(store: RolloutStore) -> RedisWorld:
    return RedisWorld(store)


def test_a_good_canary_promotes_through_every_step(world: World) -> None:
    rollout_id = world.register("checkout")
    rollout = world.run(rollout_id, 60)
    assert rollout.phase is Phase.SUCCEEDED
    assert world.cluster.writes == [
        ("checkout", 100, 0),
        ("checkout", 95, 5),
        ("checkout", 90, 10),
        ("checkout", 75, 25),
        ("checkout", 50, 50),
        ("checkout", 0, 100),
    ]
    kinds = world.kinds(rollout_id)
    assert kinds[:2] == ["created", "started"]
    assert kinds.count("step_advanced") == 4
    assert kinds[-2:] == ["promoting", "promoted"]
    assert rollout.checks.failed == 0 and rollout.checks.passed >= 16
    assert not world.store.active_for(NS, "checkout")  # the service is free for the next rollout


def test_a_bad_canary_rolls_back_with_the_verdict(world: World) -> None:
    rollout_id = world.register("cart", canary_error=0.3)
    rollout = world.run(rollout_id, 60)
    assert rollout.phase is Phase.ROLLED_BACK
    assert world.cluster.writes[-1] == ("cart", 100, 0)
    assert max(canary for _, _, canary in world.cluster.writes) <= 10
    assert rollout.reason.startswith("errors: canary 5xx")
    verdicts = [e for e in world.store.events(rollout_id) if e.kind == "verdict"]
    assert verdicts[-1].data["outcome"] == "fail"
    assert verdicts[-1].data["canary_requests"] > 0


EARLY_STEPS = {"step_min_duration": "5s", "step_max_duration": "30s"}


def step_lengths(world: World, rollout_id: str) -> list[float]:
    """Seconds from each step's start to the next step's (or to promotion)."""
    moves = [e.at for e in world.store.events(rollout_id) if e.kind in ("step_advanced", "promoting")]
    return [(after - before).total_seconds() for before, after in itertools.pairwise(moves)]


def test_a_busy_good_canary_ends_its_steps_early_and_says_why(world: World) -> None:
    rollout_id = world.register("checkout", canary_error=0.005, rps=50_000, **EARLY_STEPS)
    rollout = world.run(rollout_id, 120)
    assert rollout.phase is Phase.SUCCEEDED
    assert [canary for _, _, canary in world.cluster.writes] == [0, 5, 10, 25, 50, 100]
    assert max(step_lengths(world, rollout_id)) < 30  # none ran to step_max_duration
    advanced = [e.message for e in world.store.events(rollout_id) if e.kind == "step_advanced"][1:]
    assert advanced and all("ended early after" in message for message in advanced)
    assert "canary no worse than 1.5x stable's error odds: evidence" in advanced[0]
    assert "ended early after" in rollout.reason and rollout.no_worse_evidence is not None
    assert rollout.no_worse_evidence >= 100


def test_a_quiet_good_canary_runs_every_step_to_its_longest_length(world: World) -> None:
    rollout_id = world.register("checkout", canary_error=0.005, rps=40, **EARLY_STEPS)  # no errors to learn from
    rollout = world.run(rollout_id, 200)
    assert rollout.phase is Phase.SUCCEEDED
    assert step_lengths(world, rollout_id) == [30, 30, 30, 30]
    assert "ended early" not in " ".join(e.message for e in world.store.events(rollout_id))
    assert rollout.no_worse_evidence is not None and rollout.no_worse_evidence < 100


def test_a_failure_during_a_step_that_could_end_early_still_rolls_back(world: World) -> None:
    rollout_id = world.register("cart", canary_error=0.05, rps=50_000, **EARLY_STEPS)
    rollout = world.run(rollout_id, 60)
    assert rollout.phase is Phase.ROLLED_BACK
    assert rollout.reason.startswith("errors: canary 5xx")
    assert world.cluster.writes[-1] == ("cart", 100, 0)
    assert world.kinds(rollout_id).count("step_advanced") == 1  # the first step only: none ended early


def test_insufficient_traffic_holds_then_rolls_back(world: World) -> None:
    rollout_id = world.register("quiet", rps=2.0)  # 0.1 request/s reaches the canary at 5 %
    held = world.run(rollout_id, 8)
    assert held.phase is Phase.PROGRESSING and held.step_index == 0
    rollout = world.run(rollout_id, 30)
    assert rollout.phase is Phase.ROLLED_BACK
    assert rollout.reason.startswith("insufficient traffic: canary served")


def test_insufficient_traffic_with_hold_keeps_waiting(world: World) -> None:
    rollout_id = world.register("quiet", rps=2.0, on_insufficient_traffic="hold")
    rollout = world.run(rollout_id, 40)
    assert rollout.phase is Phase.PROGRESSING and rollout.step_index == 0
    assert "holding (policy: hold)" in rollout.reason
    world.cluster.services[(NS, "quiet")].requests_per_second = 200.0  # traffic arrives
    assert world.run(rollout_id, 60).phase is Phase.SUCCEEDED


def test_a_never_ready_canary_rolls_back_at_the_progress_deadline(world: World) -> None:
    rollout_id = world.register("stuck")
    world.cluster.ready["stuck-00002"] = False
    rollout = world.run(rollout_id, 30)
    assert rollout.phase is Phase.ROLLED_BACK
    assert "not Ready within the progress deadline (10s)" in rollout.reason
    assert world.cluster.writes == [("stuck", 100, 0), ("stuck", 100, 0)]
    assert rollout.finished_at is not None
    assert (rollout.finished_at - rollout.created_at).total_seconds() <= 13


def test_an_out_of_band_traffic_edit_ends_superseded_without_further_writes(world: World) -> None:
    rollout_id = world.register("edited")
    world.run(rollout_id, 8)
    writes = len(world.cluster.writes)
    world.cluster.edit(NS, "edited", {"edited-00001": 70, "edited-00002": 30})
    rollout = world.run(rollout_id, 10)
    assert rollout.phase is Phase.SUPERSEDED
    assert "traffic was set to 30 % canary by someone else" in rollout.reason
    assert len(world.cluster.writes) == writes
    assert world.cluster.current_split(NS, "edited") == {"edited-00001": 70, "edited-00002": 30}


def test_a_lagging_copy_that_looks_edited_is_read_again_before_anything_ends(world: World) -> None:
    rollout_id = world.register("lagging")
    world.run(rollout_id, 8)
    # The worker's watched copy shows a hand edit that the cluster does not have (it lags).
    world.cluster.stale[(NS, "lagging")] = (TrafficTarget("lagging-00001", 70), TrafficTarget("lagging-00002", 30))
    rollout = world.run(rollout_id, 60)
    assert rollout.phase is Phase.SUCCEEDED
    assert "superseded" not in world.kinds(rollout_id)
    assert world.cluster.fresh_reads > 0


def test_an_edit_racing_autocanarys_write_ends_superseded_and_survives(world: World) -> None:
    rollout_id = world.register("raced", step_min_duration="2s", interval="1s")
    for _ in range(20):  # until the first step is live and the next write is due
        world.run(rollout_id, 1)
        if world.get(rollout_id).applied_canary_weight == 5:
            break
    writes = len(world.cluster.writes)
    world.cluster.before_write = lambda: world.cluster.edit(NS, "raced", {"raced-00001": 60, "raced-00002": 40})
    rollout = world.run(rollout_id, 10)
    assert rollout.phase is Phase.SUPERSEDED
    assert "traffic was set to 40 % canary by someone else" in rollout.reason
    assert len(world.cluster.writes) == writes  # the operator's 40 % was not overwritten, nothing after it
    assert world.cluster.current_split(NS, "raced") == {"raced-00001": 60, "raced-00002": 40}


def test_a_new_revision_created_by_someone_else_supersedes(world: World) -> None:
    rollout_id = world.register("moving")
    world.run(rollout_id, 8)
    world.cluster.services[(NS, "moving")].revisions.append("moving-00003")
    rollout = world.run(rollout_id, 3)
    assert (rollout.phase, rollout.reason.split(";")[0]) == (
        Phase.SUPERSEDED,
        "superseded: revision moving-00003 was created",
    )


def test_prometheus_down_holds_every_step_and_never_promotes(world: World) -> None:
    rollout_id = world.register("blind")
    world.run(rollout_id, 3)
    before = world.get(rollout_id)
    world.metrics.down = True
    during = world.run(rollout_id, 40)
    assert during.phase is Phase.PROGRESSING
    assert (during.step_index, during.canary_weight) == (before.step_index, before.canary_weight)
    assert during.checks.errored >= 30
    assert "metrics unavailable" in during.reason
    world.metrics.down = False
    assert world.run(rollout_id, 60).phase is Phase.SUCCEEDED


def test_a_failed_traffic_write_is_repeated_on_the_next_tick(world: World) -> None:
    rollout_id = world.register("flaky")
    world.run(rollout_id, 2)
    world.cluster.failing_writes = 3
    rollout = world.run(rollout_id, 60)
    assert rollout.phase is Phase.SUCCEEDED
    canary_weights = [canary for _, _, canary in world.cluster.writes]
    assert canary_weights == sorted(canary_weights)  # retried in place, never out of order


def test_the_kubernetes_api_down_holds_and_recovers(world: World) -> None:
    rollout_id = world.register("offline")
    world.run(rollout_id, 3)
    world.cluster.unreachable = True
    during = world.run(rollout_id, 20)
    assert during.phase is Phase.PROGRESSING and during.checks.errored >= 15
    world.cluster.unreachable = False
    assert world.run(rollout_id, 60).phase is Phase.SUCCEEDED


def test_abort_preempts_and_records_the_actor(world: World) -> None:
    rollout_id = world.register("pager")
    world.run(rollout_id, 8)
    world.runner.control(rollout_id, ManualActionKind.ABORT, "alice", "error budget")
    rollout = world.get(rollout_id)
    assert rollout.phase is Phase.ABORTED
    assert world.cluster.writes[-1] == ("pager", 100, 0)
    abort = next(e for e in world.store.events(rollout_id) if e.kind == "abort")
    assert (abort.actor, abort.message) == ("alice", "error budget")
    assert rollout.last_action is not None and rollout.last_action.actor == "alice"


def test_a_stale_worker_cannot_write_after_an_abort(world: World) -> None:
    rollout_id = world.register("race")
    world.run(rollout_id, 8)
    stale = world.store.acquire_leases([rollout_id], "worker-a", 5000)[rollout_id]
    world.make_runner("on-call").control(rollout_id, ManualActionKind.ABORT, "bob", "")
    writes = list(world.cluster.writes)
    rollout = world.get(rollout_id)
    wanted = rollout.model_copy(update={"phase": Phase.PROGRESSING, "canary_weight": 50, "applied_canary_weight": 25})
    world.runner._carry_out(wanted, SetTraffic(stable=50, canary=50), stale, TickReport())
    assert world.cluster.writes == writes  # fenced out: nothing written after the abort
    assert world.cluster.current_split(NS, "race") == {"race-00001": 100, "race-00002": 0}


class Killed(BaseException):
    """The worker process dies here (SIGKILL): nothing after this line of its runs."""


def submit(world: World, rollout_id: str, kind: ManualActionKind, actor: str = "alice") -> str:
    """What the API does before it answers 202."""
    return world.store.commands.submit(rollout_id, kind, actor, "pager", world.clock().timestamp())


def test_an_abort_whose_worker_died_before_applying_it_is_carried_out_by_another(redis_world: RedisWorld) -> None:
    world = redis_world
    rollout_id = world.register("lost")
    world.run(rollout_id, 8)
    command_id = submit(world, rollout_id, ManualActionKind.ABORT)
    now = world.clock().timestamp()
    inbox = world.store.commands
    inbox.beat("worker-a")
    assert inbox.claim(command_id, rollout_id, "worker-a", 5, now) is not None  # took it, then SIGKILLed
    assert inbox.redeliver(now + 1) == []  # its heartbeat is still fresh: nobody else takes it yet
    world.store.redis.delete(f"{world.store.prefix}:alive:worker-a")  # the heartbeat lapses (2 s)
    assert inbox.redeliver(now + 1) == [command_id]  # long before the 5 s lease or a broker timeout
    world.make_runner("worker-b").execute(command_id)
    rollout = world.get(rollout_id)
    assert rollout.phase is Phase.ABORTED and rollout.last_action is not None
    assert world.cluster.current_split(NS, "lost") == {"lost-00001": 100, "lost-00002": 0}
    assert inbox.pending() == 0 and inbox.redeliver(now + 60) == []


def test_an_abort_whose_worker_died_after_saving_it_still_reaches_stable_100(redis_world: RedisWorld) -> None:
    world = redis_world
    rollout_id = world.register("halfway")
    world.run(rollout_id, 8)
    command_id = submit(world, rollout_id, ManualActionKind.ABORT)

    def die() -> None:
        raise Killed

    world.cluster.before_write = die
    with pytest.raises(Killed):  # saved rolling_back, then died before its write
        world.make_runner("worker-a").execute(command_id)
    assert world.get(rollout_id).phase is Phase.ROLLING_BACK
    assert world.cluster.current_split(NS, "halfway")["halfway-00002"] > 0  # the canary still serves
    world.store.redis.delete(f"{world.store.prefix}:alive:worker-a")  # its heartbeat lapses (2 s)
    assert world.store.commands.redeliver(world.clock().timestamp()) == [command_id]  # before the 5 s lease
    world.make_runner("worker-b").execute(command_id)
    assert world.get(rollout_id).phase is Phase.ABORTED
    assert world.cluster.current_split(NS, "halfway") == {"halfway-00001": 100, "halfway-00002": 0}
    assert world.kinds(rollout_id).count("abort") == 1  # applied once, only its write repeated


def test_commands_of_one_rollout_are_applied_in_the_order_they_were_accepted(world: World) -> None:
    rollout_id = world.register("ordered")
    world.run(rollout_id, 4)
    pause = submit(world, rollout_id, ManualActionKind.PAUSE)
    world.clock.advance(0.01)
    resume = submit(world, rollout_id, ManualActionKind.RESUME)
    assert world.make_runner("worker-b").execute(resume) is None  # not its turn: the pause goes first
    world.runner.execute(pause)  # and the worker that applied the pause goes on with the resume
    assert [k for k in world.kinds(rollout_id) if k in ("pause", "resume")] == ["pause", "resume"]
    assert world.get(rollout_id).phase is Phase.PROGRESSING and world.store.commands.pending() == 0


def test_a_command_the_rollout_outgrew_is_refused_in_the_event_log(world: World) -> None:
    rollout_id = world.register("done")
    command_id = submit(world, rollout_id, ManualActionKind.RESUME)  # accepted when... a pause was pending
    world.runner.execute(command_id)
    refused = [e for e in world.store.events(rollout_id) if e.kind == "command_refused"]
    assert len(refused) == 1 and "cannot resume" in refused[0].message and refused[0].actor == "alice"
    assert world.store.commands.pending() == 0
    assert world.store.samples("resume_latency") == []  # nothing took effect, so nothing to time


def test_pause_holds_and_resume_continues(world: World) -> None:
    rollout_id = world.register("held")
    world.run(rollout_id, 4)
    world.runner.control(rollout_id, ManualActionKind.PAUSE, "carol", "checking dashboards")
    paused = world.run(rollout_id, 20)
    assert paused.phase is Phase.PAUSED and paused.step_index == 0
    world.runner.control(rollout_id, ManualActionKind.RESUME, "carol", "")
    assert world.run(rollout_id, 60).phase is Phase.SUCCEEDED


def test_promote_now_finishes_at_once(world: World) -> None:
    rollout_id = world.register("hotfix")
    world.run(rollout_id, 4)
    world.runner.control(rollout_id, ManualActionKind.PROMOTE, "dan", "hotfix")
    rollout = world.get(rollout_id)
    assert rollout.phase is Phase.SUCCEEDED
    assert world.cluster.writes[-1] == ("hotfix", 0, 100)


def test_a_deleted_service_fails_the_rollout(world: World) -> None:
    rollout_id = world.register("gone")
    world.run(rollout_id, 4)
    del world.cluster.services[(NS, "gone")]
    rollout = world.run(rollout_id, 3)
    assert (rollout.phase, rollout.reason) == (Phase.FAILED, "Service shop/gone was deleted")


def test_one_batch_fetches_metrics_once_for_many_rollouts(world: World) -> None:
    ids = [world.register(f"svc{i}") for i in range(20)]
    world.run(ids[0], 4)
    fetches = world.metrics.fetches
    now = world.clock.advance(1)
    due = world.store.claim_due(now, 100, now + timedelta(seconds=15))
    assert len(due) == 20
    report = world.runner.tick([i for i, _ in due], dict(due))
    assert report.metric_fetches == 1 and world.metrics.fetches == fetches + 1
    assert report.decided == 20


def custom_metrics(metric: str) -> dict[str, Any]:
    template = f'sum by (namespace, version, code)(increase({metric}{{version=~"$versions"}}[$window]))'
    return {"dialect": "custom", "custom_metrics": {"requests": template}}


def test_rollouts_of_one_custom_dialect_share_a_fetch_and_other_queries_get_their_own(world: World) -> None:
    ids = [world.register(f"own{i}", **custom_metrics("http_requests_total")) for i in range(6)]
    ids += [world.register(f"edge{i}", **custom_metrics("edge_requests_total")) for i in range(4)]
    ids += [world.register(f"kn{i}") for i in range(3)]
    world.run(ids[0], 4)
    now = world.clock.advance(1)
    due = world.store.claim_due(now, 100, now + timedelta(seconds=15))
    report = world.runner.tick([i for i, _ in due], dict(due))
    assert (report.metric_fetches, report.decided) == (3, 13)  # one per set of queries, whatever the batch


@respx.mock
def test_a_dead_webhook_does_not_slow_or_fail_a_rollout(redis_world: RedisWorld) -> None:
    world = redis_world
    attempts = respx.post("https://hooks.example.com/dead").mock(side_effect=httpx.ConnectError("refused"))
    blocked = threading.Event()

    def hang(_: float) -> None:  # every retry waits until the rollout is over
        blocked.wait(30)

    target = NotificationTarget(kind=NotificationKind.WEBHOOK, url="https://hooks.example.com/dead")
    notifier = NotificationDispatcher([target], sleep=hang, workers=1)
    relay = OutboxRelay(world.store, notifier, "relay-a", block_ms=50, delivery_timeout=30)
    stop = threading.Event()
    relaying = threading.Thread(target=relay.run_forever, args=(stop,), daemon=True)
    relaying.start()
    rollout_id = world.register("checkout")
    try:
        assert world.run(rollout_id, 60).phase is Phase.SUCCEEDED  # while delivery is stuck
        assert attempts.call_count >= 1
    finally:
        blocked.set()
        stop.set()
        relaying.join(10)
        notifier.close()


@respx.mock
def test_every_saved_transition_is_delivered_from_the_outbox(redis_world: RedisWorld) -> None:
    world = redis_world
    hook = respx.post("https://hooks.example.com/ok").mock(return_value=httpx.Response(204))
    target = NotificationTarget(kind=NotificationKind.WEBHOOK, url="https://hooks.example.com/ok")
    rollout_id = world.register("checkout", notifications=[target.model_dump(mode="json")])
    assert world.run(rollout_id, 60).phase is Phase.SUCCEEDED
    assert hook.call_count == 0  # the runner only queues; nothing is sent from a tick
    relay = OutboxRelay(world.store, NotificationDispatcher(), "relay-a", block_ms=50)
    while relay.run_once():
        pass
    delivered = [json.loads(call.request.content) for call in hook.calls]
    assert [d["event"] for d in delivered] == ["started", *["step_advanced"] * 4, "promoted"]
    assert delivered[-1]["rollout"]["phase"] == "succeeded" and delivered[0]["rollout"]["phase"] == "initializing"
    assert world.store.outbox_backlog() == 0


@respx.mock
def test_a_relay_killed_mid_delivery_loses_nothing(redis_world: RedisWorld) -> None:
    world = redis_world
    hook = respx.post("https://hooks.example.com/ok").mock(return_value=httpx.Response(204))
    target = NotificationTarget(kind=NotificationKind.WEBHOOK, url="https://hooks.example.com/ok")
    rollout_id = world.register("cart", canary_error=0.3, notifications=[target.model_dump(mode="json")])
    assert world.run(rollout_id, 60).phase is Phase.ROLLED_BACK
    taken = world.store.outbox_read("relay-that-dies", count=100, block_ms=10)  # read, never acknowledged
    assert [m.notification.event for m in taken] == ["started", "step_advanced", "rolled_back"]
    survivor = OutboxRelay(world.store, NotificationDispatcher(), "relay-b", block_ms=10, reclaim_idle_ms=0)
    assert survivor.run_once() == 3
    assert [json.loads(c.request.content)["event"] for c in hook.calls] == ["started", "step_advanced", "rolled_back"]
    assert world.store.outbox_backlog() == 0
    assert survivor.run_once() == 0  # acknowledged means gone: no third delivery


def test_a_batch_of_rollouts_that_all_ended_is_a_quiet_tick(world: World) -> None:
    ended = world.register("checkout")
    assert world.run(ended, 60).phase is Phase.SUCCEEDED
    writes = len(world.cluster.writes)
    report = world.runner.tick([ended, "no-such-rollout"])  # e.g. a tick sent just before they ended
    assert (report.decided, len(world.cluster.writes)) == (0, writes)


def test_a_prometheus_gap_is_judged_later_not_counted_as_no_traffic(world: World) -> None:
    rollout_id = world.register("checkout", rps=100)
    world.run(rollout_id, 4)
    assert world.get(rollout_id).phase is Phase.PROGRESSING and world.get(rollout_id).canary_weight == 5

    def verdicts() -> list[LogEntry]:
        return [e for e in world.store.events(rollout_id) if e.kind == "verdict"]

    before = len(verdicts())
    world.metrics.blind = True  # scrapes missed: no series for either revision
    world.run(rollout_id, 5)
    assert len(verdicts()) == before  # nothing judged, nothing counted as "no traffic"
    world.metrics.blind = False
    world.run(rollout_id, 1)
    after_gap = verdicts()[before]
    # One window spanning the gap: the 5 % canary's requests of those seconds are all there.
    assert after_gap.data["canary_requests"] >= 100 * 0.05 * 5


def test_a_metrics_outage_does_not_count_as_insufficient_traffic(world: World) -> None:
    rollout_id = world.register("outage", on_insufficient_traffic="rollback")
    world.run(rollout_id, 3)
    assert world.get(rollout_id).canary_weight == 5
    world.metrics.down = True  # Prometheus away for 30 s: longer than the step, its grace and the ceiling
    assert world.run(rollout_id, 30).phase is Phase.PROGRESSING
    world.metrics.down, world.metrics.blind = False, True  # back, but its first windows lie in the scrape gap
    during_gap = world.run(rollout_id, 3)
    assert during_gap.phase is Phase.PROGRESSING, during_gap.reason
    assert during_gap.metrics_down_since is None and during_gap.step_outage_seconds >= 30
    world.metrics.blind = False
    assert world.run(rollout_id, 60).phase is Phase.SUCCEEDED


def test_a_service_without_any_traffic_still_meets_the_insufficient_traffic_rule(world: World) -> None:
    rollout_id = world.register("quiet", rps=0)
    rollout = world.run(rollout_id, 60)
    assert rollout.phase is Phase.ROLLED_BACK and "insufficient traffic" in rollout.reason


def test_a_window_without_samples_is_looked_at_again_an_interval_later_not_every_second(world: World) -> None:
    rollout_id = world.register("checkout", rps=100, interval="5s", step_min_duration="30s")
    world.run(rollout_id, 12)
    world.metrics.blind = True
    fetches = world.metrics.fetches
    world.run(rollout_id, 20)
    assert world.metrics.fetches - fetches <= 5  # one look per 5 s interval, not one per second


def test_a_rollout_never_judged_for_lack_of_samples_is_still_looked_at_once_an_interval(world: World) -> None:
    rollout_id = world.register(
        "silent", rps=0, interval="10s", step_min_duration="5m", max_insufficient_duration="5m", progress_deadline="5m"
    )
    world.run(rollout_id, 5)
    assert world.get(rollout_id).phase is Phase.PROGRESSING
    fetches = world.metrics.fetches
    world.run(rollout_id, 60)
    assert world.get(rollout_id).analyzed_until is None  # no window held a sample: none was judged
    assert world.metrics.fetches - fetches <= 7  # one look per 10 s interval, not one every 5 s

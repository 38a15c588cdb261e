"""The scheduler against a real Redis: only the leader sends, in batches, and it prunes ended rollouts."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from celery import Celery

from adapters.redis_store import RolloutStore
from adapters.redis_store.commands import PICKUP_SECONDS
from rollouts import ManualActionKind, Phase, Rollout, TransientError
from rollouts.log import LogEntry
from rollouts.records import SaveResult
from tests.factories import T0, registered
from tests.fakes import Clock
from workers.scheduler import Scheduler, queued_messages


def register(store: RolloutStore, service: str) -> Rollout:
    rollout = registered(service)
    return store.create(rollout, LogEntry("created", "registered", T0, "pending"))[0]


def test_only_the_leader_sends_the_due_rollouts_in_batches(store: RolloutStore) -> None:
    ids = {register(store, f"svc{i}").id for i in range(5)}
    sent: dict[str, list[list[str]]] = {"a": [], "b": []}
    clock = Clock(T0 + timedelta(seconds=1))

    def scheduler(owner: str) -> Scheduler:
        return Scheduler(store, lambda batch, _due: sent[owner].append(batch), owner=owner, batch_size=2, clock=clock)

    leader, follower = scheduler("a"), scheduler("b")
    assert leader.run_once() == 5
    assert follower.run_once() == 0
    assert [len(batch) for batch in sent["a"]] == [2, 2, 1] and sent["b"] == []
    assert {rollout_id for batch in sent["a"] for rollout_id in batch} == ids
    assert leader.run_once() == 0  # claimed: not sent again before the claim runs out


def test_the_leader_prunes_what_ended_before_the_retention_now_and_then(store: RolloutStore) -> None:
    rollout = register(store, "checkout")
    ended = rollout.with_phase(Phase.SUCCEEDED, T0, "promoted")
    assert store.save(ended, token=None, next_tick=None)[0] is SaveResult.OK
    clock = Clock(T0 + timedelta(days=1))
    scheduler = Scheduler(
        store,
        lambda _batch, _due: None,
        owner="a",
        retention=timedelta(days=2),
        prune_every=timedelta(minutes=10),
        clock=clock,
    )
    scheduler.run_once()
    assert store.get(rollout.id) is not None  # ended a day ago: kept
    clock.advance(2 * 24 * 3600)
    scheduler.run_once()
    assert store.get(rollout.id) is None and store.events(rollout.id) == []


def test_a_broker_failure_after_the_claim_makes_the_rollouts_due_again(store: RolloutStore) -> None:
    ids = {register(store, f"svc{i}").id for i in range(3)}
    clock = Clock(T0 + timedelta(seconds=1))
    sent: list[str] = []
    broker_up = False

    def send(batch: list[str], _due: dict[str, float]) -> None:
        if not broker_up:
            raise ConnectionError("Error 111 connecting to the broker")  # not one of autocanary's own errors
        sent.extend(batch)

    scheduler = Scheduler(store, send, owner="a", batch_size=2, clock=clock)
    with pytest.raises(TransientError, match="cannot send ticks"):
        scheduler.run_once()
    broker_up = True
    assert scheduler.run_once() == 3  # due again at once, not after the claim ran out
    assert set(sent) == ids


def test_the_scheduler_sends_commands_nobody_carried_out_again(store: RolloutStore) -> None:
    rollout = register(store, "checkout")
    command_id = store.commands.submit(rollout.id, ManualActionKind.ABORT, "oncall", "", T0.timestamp())
    clock = Clock(T0)
    resent: list[str] = []
    scheduler = Scheduler(store, lambda _b, _d: None, owner="a", resend=resent.append, clock=clock)
    scheduler.run_once()
    assert resent == []  # just accepted: its own Celery message should reach a worker first
    clock.advance(PICKUP_SECONDS)
    scheduler.run_once()
    assert resent == [command_id]
    scheduler.run_once()
    assert resent == [command_id]  # not again before the next pickup time


def test_while_enough_batches_wait_for_a_worker_what_is_due_stays_in_the_schedule(store: RolloutStore) -> None:
    ids = {register(store, f"svc{i}").id for i in range(6)}
    clock = Clock(T0 + timedelta(seconds=1))
    queued: list[list[str]] = []
    broken = False

    def backlog() -> int:
        if broken:
            raise ConnectionError("the broker went away")
        return len(queued)

    scheduler = Scheduler(
        store,
        lambda batch, _due: queued.append(batch),
        owner="a",
        batch_size=2,
        backlog=backlog,
        max_queued_batches=1,
        clock=clock,
    )
    for _ in range(3):  # the first round sends; then one batch or more waits
        clock.advance(30)  # past every claim: all are due again unless still in the schedule
        scheduler.run_once()
    assert [len(batch) for batch in queued] == [2, 2, 2]  # one round's worth, never sent twice
    queued.clear()  # a worker took them all
    clock.advance(30)
    assert scheduler.run_once() == 6
    assert {rollout_id for batch in queued for rollout_id in batch} == ids
    queued.clear()
    broken = True
    clock.advance(30)
    assert scheduler.run_once() == 6  # a broker that cannot say is not waited for


def test_the_backlog_is_the_ticks_queue_length_even_when_empty(redis_server: str) -> None:
    app = Celery(broker=redis_server)
    queue = f"ticks-{uuid.uuid4().hex[:8]}"
    assert queued_messages(app, queue) == 0  # Redis holds no key for an empty queue
    for _ in range(3):
        app.send_task("autocanary.tick", args=[["r1"], {}], queue=queue)
    assert queued_messages(app, queue) == 3

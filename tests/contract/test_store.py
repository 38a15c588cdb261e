"""`RolloutStore` against a real Redis: atomic create, compare-and-set, fencing, schedule, events."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta

import pytest

from adapters.redis_store import RolloutStore, body_hash
from rollouts import Phase, Rollout
from rollouts.errors import ActiveRolloutExists, IdempotencyMismatch
from rollouts.log import LogEntry, Notification
from rollouts.records import SaveResult
from tests.factories import T0, policy


def make(service: str = "checkout", namespace: str = "shop", at: float = 0) -> Rollout:
    return Rollout.new(
        id=uuid.uuid4().hex[:12],
        namespace=namespace,
        service=service,
        stable_revision=f"{service}-00001",
        canary_revision=f"{service}-00002",
        policy=policy(),
        now=T0 + timedelta(seconds=at),
    )


def created(rollout: Rollout) -> LogEntry:
    return LogEntry("created", "registered", rollout.created_at, "pending", actor="pipeline")


def test_one_active_rollout_per_service(store: RolloutStore) -> None:
    first = make()
    store.create(first, created(first))
    second = make()
    with pytest.raises(ActiveRolloutExists) as error:
        store.create(second, created(second))
    assert error.value.rollout_id == first.id
    assert store.get(second.id) is None  # nothing half-written
    other = make(service="cart")
    assert store.create(other, created(other))[1] is True


def test_an_idempotency_key_returns_the_same_rollout_or_refuses_another_body(store: RolloutStore) -> None:
    first = make()
    stored, new = store.create(first, created(first), "run-42", body_hash({"service": "checkout"}))
    assert new and stored.version == 1
    again, new = store.create(make(), created(first), "run-42", body_hash({"service": "checkout"}))
    assert (again.id, new) == (first.id, False)
    with pytest.raises(IdempotencyMismatch):
        store.create(make(service="cart"), created(first), "run-42", body_hash({"service": "cart"}))


def test_compare_and_set_on_version_and_token(store: RolloutStore) -> None:
    rollout, _ = store.create(make(), created(make()))
    token = store.acquire_leases([rollout.id], "a", 5000)[rollout.id]
    result, saved = store.save(rollout.with_reason("one"), token=token, next_tick=T0)
    assert (result, saved.version, store.holds_token(rollout.id, token)) == (SaveResult.OK, 2, True)
    stale_version, _ = store.save(rollout.with_reason("two"), token=token, next_tick=T0)
    assert stale_version is SaveResult.STALE_VERSION
    newer = store.preempt(rollout.id, "on-call", 5000)
    assert newer > token
    stale_token, _ = store.save(saved.with_reason("three"), token=token, next_tick=T0)
    assert stale_token is SaveResult.STALE_TOKEN
    current = store.get(rollout.id)
    assert current is not None and current.reason == "one"
    assert store.save(saved.with_reason("four"), token=newer, next_tick=T0)[0] is SaveResult.OK


def test_a_notice_is_queued_exactly_when_its_decision_is_saved(store: RolloutStore) -> None:
    rollout, _ = store.create(make(), created(make()))
    token = store.acquire_leases([rollout.id], "a", 5000)[rollout.id]
    notification = Notification("step_advanced", "canary at 10 %", T0)
    result, saved = store.save(rollout.with_reason("one"), token=token, next_tick=T0, notifications=[notification])
    assert result is SaveResult.OK and store.outbox_backlog() == 1
    newer = store.preempt(rollout.id, "on-call", 5000)
    refused, _ = store.save(saved.with_reason("two"), token=token, next_tick=T0, notifications=[notification])
    assert refused is SaveResult.STALE_TOKEN and store.outbox_backlog() == 1  # a dropped decision tells no one
    (message,) = store.outbox_read("relay", block_ms=10)
    assert (message.notification, message.rollout.version, message.rollout.reason) == (notification, 2, "one")
    assert store.outbox_read("other-relay", block_ms=10) == []  # one relay at a time, until it is idle
    store.outbox_ack([message.id])
    assert store.outbox_backlog() == 0 and newer > token


def test_leases_are_exclusive_and_tokens_grow(store: RolloutStore) -> None:
    rollout, _ = store.create(make(), created(make()))
    first = store.acquire_leases([rollout.id], "a", 5000)
    assert store.acquire_leases([rollout.id], "b", 5000) == {}
    store.release_leases([rollout.id], "b")  # not b's: nothing happens
    assert store.acquire_leases([rollout.id], "b", 5000) == {}
    store.release_leases([rollout.id], "a")
    second = store.acquire_leases([rollout.id], "b", 5000)
    assert second[rollout.id] > first[rollout.id]
    assert store.holds_token(rollout.id, second[rollout.id])
    assert not store.holds_token(rollout.id, first[rollout.id])


def test_a_terminal_save_leaves_the_schedule_and_frees_the_service(store: RolloutStore) -> None:
    rollout, _ = store.create(make(), created(make()))
    assert [i for i, _ in store.claim_due(T0, 10, T0 + timedelta(seconds=15))] == [rollout.id]
    assert store.claim_due(T0 + timedelta(seconds=1), 10, T0) == []  # claimed: not sent twice
    done = rollout.with_phase(Phase.FAILED, T0, "gone")
    assert store.save(done, token=None, next_tick=T0)[0] is SaveResult.OK
    assert store.claim_due(T0 + timedelta(hours=1), 10, T0) == []
    assert store.active_for("shop", "checkout") is None


def test_a_document_saved_with_a_fencing_token_by_an_earlier_version_still_loads(store: RolloutStore) -> None:
    rollout, _ = store.create(make(), created(make()))
    old = json.loads(rollout.model_dump_json()) | {"fencing_token": 7}
    store.redis.hset(f"{store.prefix}:r:{rollout.id}", "doc", json.dumps(old))
    assert store.get(rollout.id) == rollout


def test_events_are_appended_in_order_with_their_numbers(store: RolloutStore) -> None:
    rollout, _ = store.create(make(), created(make()))
    events = [LogEntry("verdict", f"tick {i}", T0, "progressing", data={"evidence": i}) for i in range(5)]
    store.save(rollout, token=None, next_tick=T0, events=events[:3])
    store.append_events(rollout.id, events[3:])
    stored = store.events(rollout.id)
    assert [e.message for e in stored] == ["registered", "tick 0", "tick 1", "tick 2", "tick 3", "tick 4"]
    assert stored[3].data == {"evidence": 2}
    assert [e.message for e in store.events(rollout.id, after=stored[4].id)] == ["tick 4"]

    async def live() -> tuple[list[LogEntry], list[LogEntry], bool]:  # as an event stream reads it
        return (
            await store.reads.events_after(rollout.id, stored[-1].id),
            await store.reads.events_after(rollout.id, stored[3].id),
            await store.reads.ended(rollout.id),
        )

    quiet, after_third, ended = asyncio.run(live())
    assert quiet == [] and [e.message for e in after_third] == ["tick 3", "tick 4"] and not ended


def test_listing_filters_and_pages_newest_first(store: RolloutStore) -> None:
    made = []
    for i in range(7):
        rollout = make(service=f"svc{i}", namespace="blog" if i % 2 else "shop", at=i)
        store.create(rollout, created(rollout))
        made.append(rollout)
    page = store.list_rollouts(namespace="shop", limit=2)
    assert [r.service for r in page.rollouts] == ["svc6", "svc4"]
    rest = store.list_rollouts(namespace="shop", limit=2, cursor=page.next_cursor)
    assert [r.service for r in rest.rollouts] == ["svc2", "svc0"]
    assert store.list_rollouts(namespace="shop", limit=2, cursor=rest.next_cursor).rollouts == []
    assert [r.service for r in store.list_rollouts(service="svc3").rollouts] == ["svc3"]
    assert len(store.list_rollouts(phase=Phase.PENDING, limit=100).rollouts) == 7
    assert store.list_rollouts(phase=Phase.SUCCEEDED).rollouts == []


def test_one_scheduler_leads(store: RolloutStore) -> None:
    assert store.lead("scheduler", "a", 1000)
    assert not store.lead("scheduler", "b", 1000)
    assert store.lead("scheduler", "a", 1000)  # renewing


def test_rollouts_that_ended_before_the_cutoff_are_deleted_with_their_event_logs(store: RolloutStore) -> None:
    def stored(service: str, ended_after: timedelta | None) -> Rollout:
        rollout, _ = store.create(make(service), created(make(service)))
        if ended_after is not None:
            done = rollout.with_phase(Phase.ABORTED, T0 + ended_after, "pager")
            assert store.save(done, token=None, next_tick=None)[0] is SaveResult.OK
        found = store.get(rollout.id)
        assert found is not None
        return found

    old = [stored(f"old{i}", timedelta(hours=1)) for i in range(3)]
    recent = stored("recent", timedelta(days=20))
    running = stored("running", None)  # created as long ago as the old ones, still active
    cutoff = T0 + timedelta(days=10)

    assert store.prune_ended(cutoff, limit=2) == 2
    assert store.prune_ended(cutoff, limit=2) == 1
    assert store.prune_ended(cutoff) == 0
    for rollout in old:
        assert store.get(rollout.id) is None and store.events(rollout.id) == []
    assert {r.id for r in store.list_rollouts(limit=100).rollouts} == {recent.id, running.id}
    assert [e.kind for e in store.events(recent.id)] == ["created"]


def test_filtered_lists_read_their_own_index_and_follow_phase_changes(store: RolloutStore) -> None:
    made = [make(f"svc{i}", namespace="shop" if i % 2 else "blog", at=i) for i in range(6)]
    for rollout in made:
        store.create(rollout, created(rollout))
    first = made[0].model_copy(update={"version": 1})
    progressing = first.model_copy(update={"phase": Phase.PROGRESSING})
    result, _ = store.save(progressing, token=None, next_tick=None)
    assert result is SaveResult.OK
    assert [r.id for r in store.list_rollouts(phase=Phase.PROGRESSING).rollouts] == [first.id]
    assert first.id not in {r.id for r in store.list_rollouts(phase=Phase.PENDING, limit=100).rollouts}
    assert {r.service for r in store.list_rollouts(namespace="shop").rollouts} == {"svc1", "svc3", "svc5"}
    assert store.redis.zcard(f"{store.prefix}:index:ns:shop") == 3  # the namespace's own index
    assert store.redis.zcard(f"{store.prefix}:index:phase:pending") == 5


def test_rollouts_stored_before_the_indexes_are_indexed_at_the_first_list(store: RolloutStore) -> None:
    older = [make(f"svc{i}", at=i) for i in range(3)]
    for rollout in older:
        store.create(rollout, created(rollout))
    for key in store.redis.keys(f"{store.prefix}:index:*"):  # as an earlier release left them
        store.redis.delete(key)
    store.redis.delete(f"{store.prefix}:indexes")
    fresh = RolloutStore(store.redis, store.prefix)
    assert {r.id for r in fresh.list_rollouts(namespace="shop").rollouts} == {r.id for r in older}
    assert fresh.ensure_indexes() == 0  # built once

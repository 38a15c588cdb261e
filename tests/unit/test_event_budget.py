"""The relay's budget for routine Kubernetes Events: client-go's per-object spam filter and a
shared rate, with held Events of one object and reason combined into one."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from tests.factories import T0
from workers.event_budget import EventBudget, RoutineEvent, RoutineEvents


def event(
    name: str, seconds: float = 0, reason: str = "CanaryStepAdvanced", message: str = "canary at 10 %"
) -> RoutineEvent:
    at = T0 + timedelta(seconds=seconds)
    return RoutineEvent("knative", "shop", name, reason, message, at, at)


def test_within_the_burst_every_event_goes_out_at_once() -> None:
    budget = EventBudget(per_second=10, burst=3)
    sent = [e for i in range(3) for e in budget.offer(event(f"svc{i}"), now=0.0)]
    assert [e.name for e in sent] == ["svc0", "svc1", "svc2"]
    assert budget.waiting == 0


def test_over_the_shared_rate_events_wait_and_those_of_one_object_and_reason_go_out_as_one() -> None:
    budget = EventBudget(per_second=10, burst=1)
    assert [e.name for e in budget.offer(event("a"), now=0.0)] == ["a"]
    assert budget.offer(event("b", 0.01, message="canary at 10 %"), now=0.01) == []
    assert budget.offer(event("b", 0.02, message="canary at 25 %"), now=0.02) == []
    assert budget.offer(event("b", 0.03, reason="CanaryStarted", message="started"), now=0.03) == []
    assert budget.waiting == 2  # b's step events combined; its start is another reason
    assert budget.next_check(0.03) == pytest.approx(0.07)
    [combined] = budget.due(0.1)
    assert combined.count == 2 and combined.reason == "CanaryStepAdvanced"
    assert combined.message == "canary at 25 % (combined from 2 similar events)"
    assert combined.first_at == T0 + timedelta(seconds=0.01) and combined.last_at == T0 + timedelta(seconds=0.02)
    [started] = budget.due(0.2)
    assert started.reason == "CanaryStarted" and started.count == 1
    assert budget.waiting == 0 and budget.next_check(0.2) is None
    assert budget.combined == 1


def test_one_object_gets_25_events_then_one_every_five_minutes_as_client_go_allows() -> None:
    budget = EventBudget(per_second=1000, burst=1000)
    sent = [e for i in range(25) for e in budget.offer(event("busy", i, message=f"step {i}"), now=float(i))]
    assert len(sent) == 25
    assert budget.offer(event("busy", 30, message="step 25"), now=30.0) == []
    assert [e.name for e in budget.offer(event("quiet", 31), now=31.0)] == ["quiet"]  # others are not held up
    assert budget.offer(event("busy", 40, message="step 26"), now=40.0) == []
    wait = budget.next_check(40.0)
    assert wait is not None and 200 < wait <= 300
    [late] = budget.due(40.0 + wait)
    assert late.count == 2 and late.message == "step 26 (combined from 2 similar events)"


def test_routine_events_held_back_are_sent_from_the_thread_as_tokens_come() -> None:
    sent: list[str] = []
    done = threading.Event()

    def send(e: RoutineEvent) -> None:
        sent.append(e.name)
        if e.name == "boom":
            raise RuntimeError("403 events is forbidden")  # logged, never raised to the relay
        if len(sent) == 4:
            done.set()

    events = RoutineEvents(send, EventBudget(per_second=20, burst=1))
    for name in ("a", "boom", "b", "c"):
        events.offer(event(name))
    assert done.wait(5)
    assert sent == ["a", "boom", "b", "c"]

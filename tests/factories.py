"""Small builders for domain values, shared by the unit tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from policies import Policy, load_policy
from rollouts import Outcome, Rollout, Verdict

T0 = datetime(2026, 11, 22, 3, 0, 0, tzinfo=UTC)


def policy(**overrides: Any) -> Policy:
    """The `default` built-in with overrides (short durations make scenarios quick to read)."""
    return load_policy("default", overrides)


def rollout(policy_: Policy | None = None, now: datetime = T0, **fields: Any) -> Rollout:
    made = Rollout.new(
        id="r1",
        namespace="shop",
        service="checkout",
        stable_revision="checkout-00001",
        canary_revision="checkout-00002",
        policy=policy_ or policy(),
        now=now,
    )
    return made.model_copy(update=fields) if fields else made


def registered(service: str, now: datetime = T0) -> Rollout:
    """A new rollout of `service` in `shop` with an id of its own (for tests storing several)."""
    return Rollout.new(
        id=uuid.uuid4().hex[:12],
        namespace="shop",
        service=service,
        stable_revision=f"{service}-00001",
        canary_revision=f"{service}-00002",
        policy=policy(),
        now=now,
    )


def verdict(outcome: Outcome = Outcome.PASS, canary_requests: int = 100, sentence: str = "") -> Verdict:
    return Verdict(
        outcome=outcome,
        canary_requests=canary_requests,
        stable_requests=canary_requests * 9,
        sentence=sentence or f"{outcome.value} over {canary_requests} canary requests",
    )


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)

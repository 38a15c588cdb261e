"""Every retry policy of autocanary, in one place, on one mechanism (`tenacity`).

- `conflicts`: a conditional write that met 409 Conflict reads again and retries, a few times,
  with jittered exponential backoff (the Kubernetes routers);
- `deliveries`: a notification is sent again on a connection error, a 5xx or a 429, a few times,
  with exponential backoff (webhooks, Slack);
- `reconnects`: `rollout watch` resumes a stream the API broke off, for as long as the current
  outage has lasted less than its budget, waiting longer as it goes on.

Celery's own `autoretry_for` retries the worker's tasks (`workers.celery_app`). Each caller
passes `sleep`, so tests never wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
    wait_exponential_jitter,
)

Sleep = Callable[[float], None]


def conflicts(retries: int, backoff: float, conflict: type[Exception], sleep: Sleep = time.sleep) -> Retrying:
    """Up to `retries` more attempts after a `conflict`; raises `tenacity.RetryError` when all met one."""
    return Retrying(
        retry=retry_if_exception_type(conflict),
        stop=stop_after_attempt(retries + 1),
        wait=wait_exponential_jitter(multiplier=backoff, exp_base=2, jitter=backoff),
        sleep=sleep,
    )


def deliveries(
    retries: int,
    backoff: float,
    failed: Callable[[Any], bool],
    transient: type[Exception],
    sleep: Sleep = time.sleep,
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> Retrying:
    """Up to `retries` more attempts while the answer `failed` or the call raised `transient`;
    the last answer is returned (or the last error raised) when they run out."""
    return Retrying(
        retry=retry_if_exception_type(transient) | retry_if_result(failed),
        stop=stop_after_attempt(retries + 1),
        wait=wait_exponential(multiplier=backoff, exp_base=2),
        sleep=sleep,
        before_sleep=before_sleep,
        retry_error_callback=_last_outcome,
    )


def reconnects(
    retryable: Callable[[BaseException], bool],
    outage_seconds: Callable[[], float],
    budget: float,
    sleep: Sleep = time.sleep,
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> Retrying:
    """Retry while `retryable` says so and the current outage is within `budget` seconds; the
    wait grows with the outage, from half a second to five."""
    return Retrying(
        retry=retry_if_exception(retryable),
        stop=lambda _: outage_seconds() > budget,
        wait=lambda _: min(5.0, 0.5 + outage_seconds() / 4),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )


def _last_outcome(state: RetryCallState) -> Any:
    assert state.outcome is not None  # noqa: S101 (tenacity calls this only after an attempt)
    return state.outcome.result()  # the last answer, or its error raised again

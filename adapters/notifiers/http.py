"""What every HTTP notifier shares: a POST with the delivery retry policy, answers sorted.

A connection error, a 5xx or a 429 is tried again (`adapters.retry.deliveries`); another 4xx is
the target refusing, logged and not retried. Delivery never raises: a dead target costs a log
line, never a rollout's tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import httpx
from tenacity import RetryCallState

from adapters import retry

log = logging.getLogger("autocanary.notify")


class HttpPoster:
    def __init__(
        self,
        client: httpx.Client,
        *,
        retries: int = 3,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.retries = retries
        self.backoff = backoff
        self.sleep = sleep

    def post(self, url: str, body: bytes, headers: Mapping[str, str], what: str) -> bool:
        """POST `body`; True once the target accepted it (2xx or 3xx), False when it refused or stayed away."""
        attempts = retry.deliveries(
            self.retries,
            self.backoff,
            failed=_busy,
            transient=httpx.HTTPError,
            sleep=self.sleep,
            before_sleep=lambda state: log.info(
                "%s unreachable or busy (%s), attempt %d", url, _outcome(state), state.attempt_number
            ),
        )
        try:
            answer: httpx.Response | None = attempts(self.client.post, url, content=body, headers=dict(headers))
        except httpx.HTTPError:
            answer = None
        if answer is None or _busy(answer):
            log.warning("gave up notifying %s of %s", url, what)
            return False
        if answer.status_code >= 400:
            log.warning("%s refused %s: %s", url, what, answer.status_code)
        return answer.status_code < 400


def _busy(answer: httpx.Response) -> bool:
    return answer.status_code >= 500 or answer.status_code == 429


def _outcome(state: RetryCallState) -> str:
    """What the last attempt got: an error's type or an answer's status."""
    if state.outcome is None:
        return "nothing yet"
    error = state.outcome.exception()
    return type(error).__name__ if error else str(state.outcome.result().status_code)

"""The Prometheus adapter: per-revision counts for a batch of rollouts, errors sorted for the runner.

Built on `prometheus-api-client` with explicit retries (urllib3 `Retry`), timeouts, optional
bearer token, basic auth and TLS settings, and POST queries (a batch of a thousand revisions
makes a long selector). Two queries per tick round, whatever the number of rollouts:
request counts by status, and latency buckets (see `analyzer.dialects`).

- connection errors, timeouts and 5xx (after the retries) raise `TransientError`;
- a query Prometheus refuses (400/422) raises `PermanentError` with Prometheus's own message;
- an empty result is data: the revisions served no requests.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from analyzer.dialects import queries_for
from rollouts.counts import RevisionCounts, RevisionRef
from rollouts.errors import PermanentError, TransientError
from rollouts.ports import MetricsSource

T = TypeVar("T")


@dataclass(frozen=True)
class PrometheusSettings:
    url: str
    bearer_token: str | None = None
    basic_auth: tuple[str, str] | None = None
    verify_tls: bool = True
    ca_file: str | None = None
    client_cert: tuple[str, str] | None = None
    """(certificate file, key file) for mutual TLS."""
    timeout: float = 5.0
    retries: int = 2
    backoff: float = 0.2


@dataclass(frozen=True)
class Sample:
    """Counts per revision for the window ending at `at`."""

    at: datetime
    counts: dict[RevisionRef, RevisionCounts]


class PrometheusMetrics:
    def __init__(self, settings: PrometheusSettings) -> None:
        self.settings = settings
        retry = Retry(
            total=settings.retries,
            connect=settings.retries,
            read=settings.retries,
            backoff_factor=settings.backoff,
            status_forcelist=(502, 503, 504),
            allowed_methods=frozenset({"GET", "POST"}),
            raise_on_status=False,  # the last answer reaches us and is classified below
        )
        session = requests.Session()
        # The client's errors carry only text; the answer itself says what went wrong.
        self._refusals = threading.local()
        session.hooks["response"].append(self._remember_refusal)
        session.verify = settings.ca_file or settings.verify_tls
        if settings.client_cert:
            session.cert = settings.client_cert
        headers = {"Authorization": f"Bearer {settings.bearer_token}"} if settings.bearer_token else None
        self.client = PrometheusConnect(
            url=settings.url,
            headers=headers,
            disable_ssl=not settings.verify_tls,
            retry=retry,
            auth=settings.basic_auth,
            session=session,
            timeout=settings.timeout,
            method="POST",
        )
        self.session = session

    def fetch(
        self, source: MetricsSource, targets: Sequence[RevisionRef], window: timedelta, at: datetime
    ) -> dict[RevisionRef, RevisionCounts]:
        """Counts of every target revision over the `window` ending at `at`: two queries in all
        (one when a custom dialect reads no latency buckets)."""
        if not targets:
            return {}
        queries = queries_for(source)
        seconds = _whole_seconds(window)
        params = {"time": f"{at.timestamp():.3f}"}
        counts_query = queries.counts_query(targets, seconds)
        counts = self._query(lambda: self.client.custom_query(counts_query, params=params))
        buckets: list[dict[str, Any]] = []
        if queries.has_buckets:
            buckets_query = queries.buckets_query(targets, seconds)
            buckets = self._query(lambda: self.client.custom_query(buckets_query, params=params))
        return queries.parse(counts, buckets, targets)

    def fetch_windows(
        self, source: MetricsSource, windows: Mapping[int, Sequence[RevisionRef]], at: datetime
    ) -> dict[int, dict[RevisionRef, RevisionCounts]]:
        """`fetch` for several windows ending at `at` (seconds -> their revisions): still two
        queries in all, each window's series tagged with it."""
        windows = {w: refs for w, refs in windows.items() if refs}
        if not windows:
            return {}
        if any(w < 1 for w in windows):
            raise ValueError("a window is at least one second")
        queries = queries_for(source)
        params = {"time": f"{at.timestamp():.3f}"}
        counts_query = queries.counts_query_windows(windows)
        counts = self._query(lambda: self.client.custom_query(counts_query, params=params))
        buckets: list[dict[str, Any]] = []
        if queries.has_buckets:
            buckets_query = queries.buckets_query_windows(windows)
            buckets = self._query(lambda: self.client.custom_query(buckets_query, params=params))
        return queries.parse_windows(counts, buckets, windows)

    def fetch_range(
        self,
        source: MetricsSource,
        targets: Sequence[RevisionRef],
        start: datetime,
        end: datetime,
        step: timedelta,
    ) -> list[Sample]:
        """Consecutive windows of length `step` ending at start+step, start+2*step, ... <= end (for replay)."""
        queries = queries_for(source)
        seconds = _whole_seconds(step)
        first = start + step
        counts_query = queries.counts_query(targets, seconds)
        counts = self._query(lambda: self.client.custom_query_range(counts_query, first, end, f"{seconds}s"))
        buckets: list[dict[str, Any]] = []
        if queries.has_buckets:
            buckets_query = queries.buckets_query(targets, seconds)
            buckets = self._query(lambda: self.client.custom_query_range(buckets_query, first, end, f"{seconds}s"))
        samples = []
        moment = first
        while moment <= end:
            stamp = moment.timestamp()
            samples.append(Sample(moment, queries.parse(_at(counts, stamp), _at(buckets, stamp), targets)))
            moment += step
        return samples

    def query(self, promql: str, at: datetime | None = None) -> list[dict[str, Any]]:
        """One instant query, its raw result (for readiness checks and dashboards' expressions)."""
        params = {"time": f"{at.timestamp():.3f}"} if at else None
        result: list[dict[str, Any]] = self._query(lambda: self.client.custom_query(promql, params=params))
        return result

    def ready(self) -> bool:
        try:
            return bool(self.client.check_prometheus_connection())
        except requests.RequestException:
            return False

    def _remember_refusal(self, response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        if response.status_code != 200:
            self._refusals.last = response
        return response

    def _query(self, call: Callable[[], T]) -> T:
        self._refusals.last = None
        try:
            return call()
        except PrometheusApiClientException as exc:
            answer: requests.Response | None = self._refusals.last
            status, message = (answer.status_code, _error_of(answer)) if answer is not None else (None, str(exc))
            if status in (400, 422):
                raise PermanentError(f"Prometheus refused the query: {message}") from exc
            raise TransientError(f"Prometheus answered {status or 'an error'}: {message}") from exc
        except requests.RequestException as exc:  # connection refused, timeout, retries exhausted
            raise TransientError(f"Prometheus unreachable at {self.settings.url}: {type(exc).__name__}") from exc


def _whole_seconds(window: timedelta) -> int:
    seconds = round(window.total_seconds())
    if seconds < 1:
        raise ValueError("a window is at least one second")
    return seconds


def _at(range_result: list[dict[str, Any]], stamp: float) -> list[dict[str, Any]]:
    """The samples of a range query at one evaluation time, shaped like an instant query's result."""
    found = []
    for series in range_result:
        for moment, value in series.get("values", []):
            if abs(float(moment) - stamp) < 0.5:
                found.append({"metric": series["metric"], "value": [moment, value]})
    return found


def _error_of(answer: requests.Response) -> str:
    """Prometheus's own error message from a refused query's JSON answer (else the body as text)."""
    try:
        body = answer.json()
    except ValueError:
        return answer.text.strip()
    return str(body.get("error") or body) if isinstance(body, dict) else str(body)

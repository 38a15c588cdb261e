"""A private Prometheus holding exactly known queue-proxy and Istio series, backfilled with promtool.

The series are written as OpenMetrics, turned into TSDB blocks by `promtool tsdb
create-blocks-from openmetrics`, and served by a Prometheus started on them: every count a test
expects is known to the request, with no scrape timing in the way.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandbox.istio_metrics import ISTIO_BUCKETS_MS
from sandbox.metrics import OPENCENSUS_BUCKETS_MS, OTEL_BUCKETS_S, format_le
from sandbox.prometheus import PrometheusServer

SECONDS = 300


@dataclass(frozen=True)
class Revision:
    namespace: str
    name: str
    ok_per_second: int
    errors_per_second: int
    fast_share: float  # share of requests at or under 100 ms; the rest take 100..200 ms
    reset_at: int | None = None  # second at which its pod "restarts" and its counters reset


def istio_service(revision: Revision) -> str:
    """The Istio service a revision's series belong to (its name before the first dash); its
    version label is the revision's whole name."""
    return revision.name.split("-", 1)[0]


def _istio_labels(rev: Revision, code: str, reporter: str = "destination") -> str:
    return (
        f'reporter="{reporter}",destination_workload_namespace="{rev.namespace}",'
        f'destination_service_name="{istio_service(rev)}",destination_version="{rev.name}",response_code="{code}",'
        f'destination_canonical_service="{istio_service(rev)}",destination_canonical_revision="{rev.name}"'
    )


def _cumulative(revision: Revision, second: int) -> tuple[int, int]:
    start = revision.reset_at if revision.reset_at is not None and second >= revision.reset_at else 0
    elapsed = second - start
    return revision.ok_per_second * elapsed, revision.errors_per_second * elapsed


def openmetrics(revisions: list[Revision], start: int) -> Iterator[str]:
    yield "# TYPE revision_app_request_count unknown"
    for rev, second, code, value in _samples(revisions):
        labels = (
            f'namespace_name="{rev.namespace}",revision_name="{rev.name}",'
            f'response_code="{code}",response_code_class="{code[0]}xx"'
        )
        yield f"revision_app_request_count{{{labels}}} {value} {start + second}"
    yield "# TYPE istio_requests_total counter"
    for rev, second, code, value in _samples(revisions):
        # The source sidecar reports the same requests: a query that took both would count twice.
        for reporter in ("destination", "source"):
            yield f"istio_requests_total{{{_istio_labels(rev, code, reporter)}}} {value} {start + second}"
    yield from _histogram(revisions, start, "revision_app_request_latencies", OPENCENSUS_BUCKETS_MS, 1.0, _opencensus)
    yield from _histogram(revisions, start, "kn_serving_invocation_duration_seconds", OTEL_BUCKETS_S, 1000.0, _otel)
    yield from _histogram(revisions, start, "istio_request_duration_milliseconds", ISTIO_BUCKETS_MS, 1.0, _istio_labels)
    yield "# EOF"


def _samples(revisions: list[Revision]) -> Iterator[tuple[Revision, int, str, int]]:
    """(revision, second, status code, cumulative count) of every sample."""
    for rev in revisions:
        for second in range(SECONDS + 1):
            ok, errors = _cumulative(rev, second)
            yield rev, second, "200", ok
            yield rev, second, "500", errors


def _opencensus(rev: Revision, code: str) -> str:
    return f'namespace_name="{rev.namespace}",revision_name="{rev.name}",response_code_class="{code[0]}xx"'


def _otel(rev: Revision, code: str) -> str:
    return f'k8s_namespace_name="{rev.namespace}",kn_revision_name="{rev.name}",http_response_status_code="{code}"'


def _histogram(
    revisions: list[Revision],
    start: int,
    name: str,
    bounds: Sequence[float],
    per_ms: float,
    labels_of: Callable[[Revision, str], str],
) -> Iterator[str]:
    """Requests at most 100 ms for the revision's `fast_share` (half of them under 50 ms), the rest under 200 ms."""
    yield f"# TYPE {name} histogram"
    for rev, second, code, value in _samples(revisions):
        labels = labels_of(rev, code)
        fast = round(value * rev.fast_share)
        for bound in bounds:
            ms = bound * per_ms
            at_most = fast if ms < 200 else value
            if ms < 100:
                at_most = 0 if ms < 50 else fast // 2
            yield f'{name}_bucket{{{labels},le="{format_le(bound)}"}} {at_most} {start + second}'
        yield f'{name}_bucket{{{labels},le="+Inf"}} {value} {start + second}'
        yield f"{name}_count{{{labels}}} {value} {start + second}"
        yield f"{name}_sum{{{labels}}} {value * 0.1} {start + second}"


def backfilled_prometheus(directory: Path, revisions: list[Revision], start: int) -> PrometheusServer:
    """A started Prometheus whose TSDB holds `revisions` from `start` for SECONDS seconds."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise RuntimeError("promtool is missing: install the Debian package 'prometheus'")
    source = directory / "series.om"
    source.write_text("\n".join(openmetrics(revisions, start)) + "\n")
    server = PrometheusServer(directory, targets=[])
    subprocess.run(  # noqa: S603 (our own arguments)
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(directory / "data")],
        check=True,
        capture_output=True,
    )
    server.start()
    return server

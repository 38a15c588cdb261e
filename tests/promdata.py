"""A private Prometheus holding exactly known queue-proxy series, backfilled with promtool.

The series are written as OpenMetrics, turned into TSDB blocks by `promtool tsdb
create-blocks-from openmetrics`, and served by a Prometheus started on them: every count a test
expects is known to the request, with no scrape timing in the way.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


def _cumulative(revision: Revision, second: int) -> tuple[int, int]:
    start = revision.reset_at if revision.reset_at is not None and second >= revision.reset_at else 0
    elapsed = second - start
    return revision.ok_per_second * elapsed, revision.errors_per_second * elapsed


def openmetrics(revisions: list[Revision], start: int) -> Iterator[str]:
    yield "# TYPE revision_app_request_count unknown"
    for rev in revisions:
        for second in range(SECONDS + 1):
            ok, errors = _cumulative(rev, second)
            for code, value in (("200", ok), ("500", errors)):
                labels = (
                    f'namespace_name="{rev.namespace}",revision_name="{rev.name}",'
                    f'response_code="{code}",response_code_class="{code[0]}xx"'
                )
                yield f"revision_app_request_count{{{labels}}} {value} {start + second}"
    for name, bounds, per_ms in (
        ("revision_app_request_latencies", OPENCENSUS_BUCKETS_MS, 1.0),
        ("kn_serving_invocation_duration_seconds", OTEL_BUCKETS_S, 1000.0),
    ):
        yield f"# TYPE {name} histogram"
        otel = name.startswith("kn_")
        for rev in revisions:
            for second in range(SECONDS + 1):
                ok, errors = _cumulative(rev, second)
                for code, value in (("200", ok), ("500", errors)):
                    if otel:
                        labels = f'k8s_namespace_name="{rev.namespace}",kn_revision_name="{rev.name}",'
                        labels += f'http_response_status_code="{code}"'
                    else:
                        labels = f'namespace_name="{rev.namespace}",revision_name="{rev.name}",'
                        labels += f'response_code_class="{code[0]}xx"'
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
    yield "# EOF"


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

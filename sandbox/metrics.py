"""Queue-proxy metrics computed from the requests the gateway really served.

Exposed in both dialects of design.md on one `/metrics` endpoint, so a Prometheus scraping the
sandbox holds the same series it would scrape or receive from a real Knative:

- `knative-opencensus`: counter `revision_app_request_count` and histogram
  `revision_app_request_latencies` (milliseconds), labelled namespace_name, service_name,
  configuration_name, revision_name, pod_name, response_code, response_code_class;
- `knative-otel`: histogram `kn_serving_invocation_duration_seconds` (seconds), labelled
  k8s_namespace_name, kn_service_name, kn_configuration_name, kn_revision_name, k8s_pod_name,
  http_response_status_code.

`/counts` gives the gateway's own tallies as JSON, to check what Prometheus says against
(`/mesh-counts` those of the Istio routes; their series are in sandbox/istio_metrics.py).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from sandbox.istio_metrics import MeshStats

OPENCENSUS_BUCKETS_MS = (
    5,
    10,
    20,
    40,
    60,
    80,
    100,
    150,
    200,
    250,
    300,
    350,
    400,
    450,
    500,
    600,
    700,
    800,
    900,
    1000,
    2000,
    5000,
    10000,
    20000,
    50000,
    100000,
)
OTEL_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)


@dataclass(frozen=True)
class SeriesKey:
    namespace: str
    service: str
    revision: str
    pod: str
    code: int


@dataclass
class Series:
    count: int = 0
    sum_seconds: float = 0.0
    ms_buckets: list[int] = field(default_factory=lambda: [0] * len(OPENCENSUS_BUCKETS_MS))
    s_buckets: list[int] = field(default_factory=lambda: [0] * len(OTEL_BUCKETS_S))


class RequestStats:
    """Counts and latency histograms per (namespace, service, revision, pod, status code), and
    the Istio series of what the mesh served (`mesh`)."""

    def __init__(self) -> None:
        self.series: dict[SeriesKey, Series] = {}
        self.mesh = MeshStats()

    def record(self, key: SeriesKey, seconds: float) -> None:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series()
        series.count += 1
        series.sum_seconds += seconds
        # Bucket i holds requests <= boundary i; cumulating happens at exposition time.
        ms_index = bisect.bisect_left(OPENCENSUS_BUCKETS_MS, seconds * 1000)
        if ms_index < len(OPENCENSUS_BUCKETS_MS):
            series.ms_buckets[ms_index] += 1
        s_index = bisect.bisect_left(OTEL_BUCKETS_S, seconds)
        if s_index < len(OTEL_BUCKETS_S):
            series.s_buckets[s_index] += 1

    def counts(self) -> list[dict[str, Any]]:
        """Requests per namespace, service, revision and status class, summed over pods."""
        totals: dict[tuple[str, str, str, str], int] = {}
        for key, series in self.series.items():
            group = (key.namespace, key.service, key.revision, f"{key.code // 100}xx")
            totals[group] = totals.get(group, 0) + series.count
        return [
            {"namespace": ns, "service": svc, "revision": rev, "code_class": cls, "count": count}
            for (ns, svc, rev, cls), count in sorted(totals.items())
        ]

    def exposition(self) -> str:
        lines = [
            "# HELP revision_app_request_count The number of requests that are routed to queue-proxy",
            "# TYPE revision_app_request_count counter",
        ]
        for key, series in self.series.items():
            lines.append(f"revision_app_request_count{{{_opencensus_labels(key)}}} {series.count}")
        lines += [
            "# HELP revision_app_request_latencies The response time in millisecond",
            "# TYPE revision_app_request_latencies histogram",
        ]
        for key, series in self.series.items():
            labels = _opencensus_labels(key)
            lines += _histogram(
                "revision_app_request_latencies",
                labels,
                OPENCENSUS_BUCKETS_MS,
                series.ms_buckets,
                series.count,
            )
            lines.append(f"revision_app_request_latencies_sum{{{labels}}} {series.sum_seconds * 1000:.3f}")
            lines.append(f"revision_app_request_latencies_count{{{labels}}} {series.count}")
        lines += [
            "# HELP kn_serving_invocation_duration_seconds The duration of task execution.",
            "# TYPE kn_serving_invocation_duration_seconds histogram",
        ]
        for key, series in self.series.items():
            labels = _otel_labels(key)
            name = "kn_serving_invocation_duration_seconds"
            lines += _histogram(name, labels, OTEL_BUCKETS_S, series.s_buckets, series.count)
            lines.append(f"{name}_sum{{{labels}}} {series.sum_seconds:.6f}")
            lines.append(f"{name}_count{{{labels}}} {series.count}")
        lines += self.mesh.exposition()
        return "\n".join(lines) + "\n"


def format_le(boundary: float) -> str:
    """A bucket boundary as Prometheus clients write it (Go's %g): 5, 0.005, 100000."""
    return f"{boundary:g}"


def _histogram(name: str, labels: str, bounds: tuple[float, ...], buckets: list[int], count: int) -> list[str]:
    lines, cumulative = [], 0
    for bound, in_bucket in zip(bounds, buckets, strict=True):
        cumulative += in_bucket
        lines.append(f'{name}_bucket{{{labels},le="{format_le(bound)}"}} {cumulative}')
    lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {count}')
    return lines


def _opencensus_labels(key: SeriesKey) -> str:
    return (
        f'namespace_name="{key.namespace}",service_name="{key.service}",configuration_name="{key.service}",'
        f'revision_name="{key.revision}",pod_name="{key.pod}",container_name="queue-proxy",'
        f'response_code="{key.code}",response_code_class="{key.code // 100}xx"'
    )


def _otel_labels(key: SeriesKey) -> str:
    return (
        f'k8s_namespace_name="{key.namespace}",kn_service_name="{key.service}",'
        f'kn_configuration_name="{key.service}",kn_revision_name="{key.revision}",'
        f'k8s_pod_name="{key.pod}",http_response_status_code="{key.code}"'
    )


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def create_metrics_app(stats: RequestStats) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """`/metrics` (Prometheus text format) and `/counts` (JSON) as a plain ASGI app."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics":
            body, content_type, status = stats.exposition().encode(), b"text/plain; version=0.0.4", 200
        elif scope["path"] == "/counts":
            body, content_type, status = json.dumps(stats.counts()).encode(), b"application/json", 200
        elif scope["path"] == "/mesh-counts":
            body, content_type, status = json.dumps(stats.mesh.counts()).encode(), b"application/json", 200
        else:
            body, content_type, status = b"not found\n", b"text/plain", 404
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
        await send({"type": "http.response.body", "body": body})

    return app

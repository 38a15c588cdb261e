"""Istio's standard metrics for the requests the sandbox's mesh really served.

What a sidecar reports with `reporter="destination"` (the server side, so every request that
reached a pod is counted once): counter `istio_requests_total` and histogram
`istio_request_duration_milliseconds` with Istio's default buckets, labelled as Istio labels
them: `destination_service_name`, `destination_service_namespace`, `destination_workload` (the
Deployment), `destination_workload_namespace`, `destination_version` (the pods' `version`
label), `destination_canonical_service` and `destination_canonical_revision`, `request_protocol`
and `response_code`. Knative revisions served through the gateway are reported too, as a mesh in
front of Knative (net-istio) reports them: workload `{revision}-deployment`, canonical service
the Knative Service, canonical revision the revision, version `unknown`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

ISTIO_BUCKETS_MS = (
    1,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
    600000,
    1800000,
    3600000,
)


@dataclass(frozen=True)
class MeshKey:
    namespace: str
    service: str
    workload: str
    version: str
    code: int
    canonical_revision: str = ""
    """Istio's canonical revision: the pods' `service.istio.io/canonical-revision` label (which
    net-istio sets to a Knative revision's name), else their `version` label."""


@dataclass
class MeshSeries:
    count: int = 0
    sum_ms: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(ISTIO_BUCKETS_MS))


class MeshStats:
    def __init__(self) -> None:
        self.series: dict[MeshKey, MeshSeries] = {}

    def record(self, key: MeshKey, seconds: float) -> None:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = MeshSeries()
        series.count += 1
        series.sum_ms += seconds * 1000
        index = bisect.bisect_left(ISTIO_BUCKETS_MS, seconds * 1000)
        if index < len(ISTIO_BUCKETS_MS):
            series.buckets[index] += 1

    def counts(self) -> list[dict[str, object]]:
        """Requests per namespace, service, version and status class."""
        totals: dict[tuple[str, str, str, str], int] = {}
        for key, series in self.series.items():
            group = (key.namespace, key.service, key.version, f"{key.code // 100}xx")
            totals[group] = totals.get(group, 0) + series.count
        return [
            {"namespace": ns, "service": svc, "version": version, "code_class": cls, "count": count}
            for (ns, svc, version, cls), count in sorted(totals.items())
        ]

    def exposition(self) -> list[str]:
        if not self.series:
            return []
        lines = ["# TYPE istio_requests_total counter"]
        lines += [f"istio_requests_total{{{_labels(key)}}} {series.count}" for key, series in self.series.items()]
        lines.append("# TYPE istio_request_duration_milliseconds histogram")
        name = "istio_request_duration_milliseconds"
        for key, series in self.series.items():
            labels, cumulative = _labels(key), 0
            for bound, in_bucket in zip(ISTIO_BUCKETS_MS, series.buckets, strict=True):
                cumulative += in_bucket
                lines.append(f'{name}_bucket{{{labels},le="{bound:g}"}} {cumulative}')
            lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {series.count}')
            lines.append(f"{name}_sum{{{labels}}} {series.sum_ms:.3f}")
            lines.append(f"{name}_count{{{labels}}} {series.count}")
        return lines


def _labels(key: MeshKey) -> str:
    return (
        f'reporter="destination",source_workload="sandbox-gateway",destination_service_name="{key.service}",'
        f'destination_service_namespace="{key.namespace}",'
        f'destination_service="{key.service}.{key.namespace}.svc.cluster.local",'
        f'destination_workload="{key.workload}",destination_workload_namespace="{key.namespace}",'
        f'destination_version="{key.version}",destination_canonical_service="{key.service}",'
        f'destination_canonical_revision="{key.canonical_revision or key.version}",'
        f'request_protocol="http",response_code="{key.code}"'
    )

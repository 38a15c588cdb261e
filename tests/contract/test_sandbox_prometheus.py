"""A real Prometheus scraping the sandbox agrees with the gateway's own counts, in both dialects."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest

from rollouts import SetTraffic
from sandbox.cluster import Endpoints
from sandbox.loadgen import drive
from tests.knative import (
    create,
    custom_objects,
    hello_service,
    knative_backends,
    new_revision,
    pinned_pair,
    service_ready,
)

RATE, DURATION = 100.0, 6.0


def query(prometheus: str, promql: str) -> list[dict[str, object]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert answer["status"] == "success", answer
    result: list[dict[str, object]] = answer["data"]["result"]
    return result


def gateway_counts(endpoints: Endpoints, namespace: str) -> Counter[tuple[str, str]]:
    counts = httpx.get(endpoints.metrics.replace("/metrics", "/counts"), timeout=5).json()
    return Counter({(c["revision"], c["code_class"]): c["count"] for c in counts if c["namespace"] == namespace})


def by_labels(result: list[dict[str, object]], revision: str, code: str, otel: bool) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for series in result:
        metric = series["metric"]
        value = series["value"]
        assert isinstance(metric, dict) and isinstance(value, list)
        code_class = metric[code] if not otel else f"{metric[code][0]}xx"
        counts[(metric[revision], code_class)] += round(float(value[1]))
    return counts


@pytest.mark.slow
def test_prometheus_matches_the_gateway_in_both_dialects(sandbox: Endpoints, namespace: str) -> None:
    assert sandbox.prometheus
    api = custom_objects(sandbox)
    create(api, namespace, hello_service("shop", "v1"))
    service_ready(api, namespace, "shop", "shop-00001")
    new_revision(api, namespace, "shop", "v2", pin="shop-00001", SANDBOX_ERROR_RATE="0.2")
    service_ready(api, namespace, "shop", "shop-00002")
    knative_backends(sandbox).router.set_weight(
        pinned_pair(namespace, "shop", "shop-00001", "shop-00002"), SetTraffic(stable=50, canary=50)
    )

    started = time.time()
    asyncio.run(drive(sandbox.gateway, f"shop.{namespace}.example.com", RATE, DURATION))
    time.sleep(2.5)  # two scrapes after the last request
    window = f"{round(time.time() - started) + 5}s"
    expected = gateway_counts(sandbox, namespace)
    assert set(expected) == {("shop-00001", "2xx"), ("shop-00002", "2xx"), ("shop-00002", "5xx")}
    selector = f'namespace_name="{namespace}"'
    otel_selector = f'k8s_namespace_name="{namespace}"'

    # The counters themselves: exactly what the gateway counted, in both dialects.
    opencensus = query(
        sandbox.prometheus,
        f"sum by (revision_name, response_code_class)(revision_app_request_count{{{selector}}})",
    )
    assert by_labels(opencensus, "revision_name", "response_code_class", otel=False) == expected
    otel = query(
        sandbox.prometheus,
        "sum by (kn_revision_name, http_response_status_code)"
        f"(kn_serving_invocation_duration_seconds_count{{{otel_selector}}})",
    )
    assert by_labels(otel, "kn_revision_name", "http_response_status_code", otel=True) == expected

    # increase() over the window: within one scrape interval's worth of requests per series
    # (Prometheus cannot see the requests before a series' first scrape).
    per_scrape = RATE  # 1 s scrapes
    increase = query(
        sandbox.prometheus,
        f"sum by (revision_name, response_code_class)(increase(revision_app_request_count{{{selector}}}[{window}]))",
    )
    seen = by_labels(increase, "revision_name", "response_code_class", otel=False)
    for key, count in expected.items():
        assert abs(seen[key] - count) <= per_scrape, (key, seen[key], count)
    otel_increase = query(
        sandbox.prometheus,
        "sum by (kn_revision_name, http_response_status_code)"
        f"(increase(kn_serving_invocation_duration_seconds_count{{{otel_selector}}}[{window}]))",
    )
    seen = by_labels(otel_increase, "kn_revision_name", "http_response_status_code", otel=True)
    for key, count in expected.items():
        assert abs(seen[key] - count) <= per_scrape, (key, seen[key], count)

    # The histogram buckets hold every request, with the real boundaries.
    buckets = query(sandbox.prometheus, f"sum by (le)(revision_app_request_latencies_bucket{{{selector}}})")
    les = {series["metric"]["le"] for series in buckets if isinstance(series["metric"], dict)}
    assert {"5", "100", "1000", "100000", "+Inf"} <= les

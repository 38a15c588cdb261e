"""PromQL per dialect: batched, grouped, validated and escaped; results parsed into counts."""

from __future__ import annotations

import pytest

from analyzer.dialects import queries_for
from policies import Dialect
from rollouts import ValidationError
from rollouts.counts import RevisionRef

TARGETS = [
    RevisionRef("shop", "checkout-00001"),
    RevisionRef("shop", "checkout-00002"),
    RevisionRef("blog", "web-00003"),
]


def test_opencensus_queries_are_batched_and_grouped() -> None:
    queries = queries_for(Dialect.KNATIVE_OPENCENSUS)
    assert queries.counts_query(TARGETS, 10) == (
        "sum by (namespace_name, revision_name, response_code_class)"
        '(increase(revision_app_request_count{namespace_name=~"blog|shop",'
        'revision_name=~"checkout\\\\-00001|checkout\\\\-00002|web\\\\-00003"}[10s]))'
    )
    assert queries.buckets_query(TARGETS, 30).startswith(
        "sum by (namespace_name, revision_name, le)(increase(revision_app_request_latencies_bucket{"
    )


def test_otel_queries_use_the_otel_names() -> None:
    queries = queries_for(Dialect.KNATIVE_OTEL)
    assert "kn_serving_invocation_duration_seconds_count{k8s_namespace_name=~" in queries.counts_query(TARGETS, 10)
    assert "sum by (k8s_namespace_name, kn_revision_name, http_response_status_code)" in queries.counts_query(
        TARGETS, 10
    )
    assert "kn_serving_invocation_duration_seconds_bucket" in queries.buckets_query(TARGETS, 10)


@pytest.mark.parametrize(
    ("ref", "field"),
    [
        (RevisionRef("shop", 'a"} or vector(1)'), "revision"),
        (RevisionRef("Shop", "a-00001"), "namespace"),
        (RevisionRef("shop", "a|b"), "revision"),
        (RevisionRef("shop", ""), "revision"),
    ],
)
def test_a_name_that_is_not_dns_1123_is_refused_before_a_query_exists(ref: RevisionRef, field: str) -> None:
    with pytest.raises(ValidationError) as error:
        queries_for(Dialect.KNATIVE_OPENCENSUS).counts_query([ref], 10)
    assert error.value.problems[0].field == field


def test_parse_sums_series_and_classifies_status() -> None:
    queries = queries_for(Dialect.KNATIVE_OTEL)
    labels = {"k8s_namespace_name": "shop", "kn_revision_name": "checkout-00002"}
    counts = [
        {"metric": {**labels, "http_response_status_code": "200"}, "value": [0, "96.9"]},
        {"metric": {**labels, "http_response_status_code": "503"}, "value": [0, "3.2"]},
        {"metric": {**labels, "http_response_status_code": "404"}, "value": [0, "1"]},
    ]
    buckets = [
        {"metric": {**labels, "le": "0.1"}, "value": [0, "60.2"]},
        {"metric": {**labels, "le": "0.25"}, "value": [0, "99"]},
        {"metric": {**labels, "le": "+Inf"}, "value": [0, "101"]},
    ]
    parsed = queries.parse(counts, buckets, TARGETS)
    got = parsed[RevisionRef("shop", "checkout-00002")]
    assert (got.requests, got.errors) == (101, 3)  # 4xx are the client's fault, not the canary's
    assert got.buckets == ((100.0, 60), (250.0, 99))
    assert parsed[RevisionRef("blog", "web-00003")].requests == 0


ISTIO_TARGETS = [
    RevisionRef("test", "v1", "reviews"),
    RevisionRef("test", "v2", "reviews"),
    RevisionRef("shop", "v2", "ratings"),
]


def test_istio_queries_take_the_destination_report_per_service_and_version() -> None:
    queries = queries_for(Dialect.ISTIO)
    assert queries.counts_query(ISTIO_TARGETS, 10) == (
        "sum by (destination_workload_namespace, destination_service_name, destination_version, response_code)"
        '(increase(istio_requests_total{reporter="destination",destination_workload_namespace=~"shop|test",'
        'destination_service_name=~"ratings|reviews",destination_version=~"v1|v2"}[10s]))'
    )
    assert queries.buckets_query(ISTIO_TARGETS, 30).startswith(
        "sum by (destination_workload_namespace, destination_service_name, destination_version, le)"
        '(increase(istio_request_duration_milliseconds_bucket{reporter="destination",'
    )


def test_istio_versions_of_two_services_are_kept_apart() -> None:
    queries = queries_for(Dialect.ISTIO)
    key = {"destination_workload_namespace": "test", "destination_version": "v2"}
    counts = [
        {"metric": {**key, "destination_service_name": "reviews", "response_code": "200"}, "value": [0, "40"]},
        {"metric": {**key, "destination_service_name": "reviews", "response_code": "500"}, "value": [0, "2"]},
        {"metric": {**key, "destination_service_name": "ratings", "response_code": "200"}, "value": [0, "7"]},
    ]
    buckets = [{"metric": {**key, "destination_service_name": "reviews", "le": "25"}, "value": [0, "30"]}]
    parsed = queries.parse(
        counts, buckets, [RevisionRef("test", "v2", "reviews"), RevisionRef("test", "v2", "ratings")]
    )
    reviews, ratings = parsed[RevisionRef("test", "v2", "reviews")], parsed[RevisionRef("test", "v2", "ratings")]
    assert (reviews.requests, reviews.errors, reviews.buckets) == (42, 2, ((25.0, 30),))
    assert (ratings.requests, ratings.errors) == (7, 0)


def test_an_istio_service_name_is_checked_like_every_label_value() -> None:
    with pytest.raises(ValidationError) as error:
        queries_for(Dialect.ISTIO).counts_query([RevisionRef("test", "v2", 'x"}')], 10)
    assert error.value.problems[0].field == "service"


def test_knative_revisions_behind_istio_are_read_by_their_canonical_labels() -> None:
    queries = queries_for(Dialect.ISTIO_KNATIVE)
    query = queries.counts_query([RevisionRef("shop", "checkout-00002", "checkout")], 10)
    assert 'destination_canonical_service=~"checkout"' in query
    assert 'destination_canonical_revision=~"checkout\\\\-00002"' in query
    assert query.startswith("sum by (destination_workload_namespace, destination_canonical_service,")


def test_a_knative_dialect_ignores_the_service_a_target_names() -> None:
    queries = queries_for(Dialect.KNATIVE_OPENCENSUS)
    labels = {"namespace_name": "shop", "revision_name": "checkout-00002", "response_code_class": "2xx"}
    target = RevisionRef("shop", "checkout-00002", "checkout")
    parsed = queries.parse([{"metric": labels, "value": [0, "12"]}], [], [target])
    assert parsed[target].requests == 12

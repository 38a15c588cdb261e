"""The custom dialect: a policy's own PromQL, checked when the policy is loaded, filled in safely.

Every refused template names its field; the names filled in are checked and escaped as the
built-in dialects' are, so no policy and no rollout can inject anything into a query.
"""

from __future__ import annotations

import pytest

from analyzer.dialects import queries_for
from policies import CustomMetrics, Dialect, InvalidPolicy, load_policy
from rollouts import ValidationError
from rollouts.counts import RevisionRef

REQUESTS = (
    "sum by (namespace, version, code) "
    '(increase(http_requests_total{namespace="$namespace", version=~"$versions"}[$window]))'
)
BUCKETS = (
    "sum by (namespace, version, le) "
    '(increase(http_request_duration_seconds_bucket{namespace=~"$namespace", version=~"$versions"}[$window]))'
)
TARGETS = [RevisionRef("shop", "checkout-v1"), RevisionRef("shop", "checkout-v2"), RevisionRef("blog", "web-v2")]


def custom(**fields: object) -> dict[str, object]:
    return {"dialect": "custom", "custom_metrics": {"requests": REQUESTS, **fields}}


def test_a_custom_policy_reads_its_own_queries() -> None:
    policy = load_policy("default", custom(latency_buckets=BUCKETS))
    assert policy.metrics_source == CustomMetrics(requests=REQUESTS, latency_buckets=BUCKETS)
    assert load_policy("default").metrics_source is Dialect.KNATIVE_OPENCENSUS


def test_placeholders_become_escaped_alternations_of_the_whole_batch() -> None:
    queries = queries_for(CustomMetrics(requests=REQUESTS, latency_buckets=BUCKETS))
    assert queries.counts_query(TARGETS, 30) == (
        "sum by (namespace, version, code) (increase(http_requests_total{"
        'namespace=~"blog|shop", version=~"checkout\\\\-v1|checkout\\\\-v2|web\\\\-v2"}[30s]))'
    )
    assert queries.buckets_query(TARGETS, 10).endswith('version=~"checkout\\\\-v1|checkout\\\\-v2|web\\\\-v2"}[10s]))')


def test_label_replace_dollars_and_spacing_are_left_alone() -> None:
    template = (
        'sum by (namespace, version, code) (label_replace(increase(envoy_cluster_upstream_rq{namespace =~ "$namespace",'
        ' envoy_cluster_name=~".+", version = "$versions"}[ $window ]), "version", "$1", "envoy_cluster_name", "(.*)"))'
    )
    query = queries_for(CustomMetrics(requests=template)).counts_query(TARGETS[:1], 10)
    assert 'namespace =~ "shop"' in query and 'version =~ "checkout\\\\-v1"' in query
    assert "[10s]" in query and '"$1"' in query


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"requests": REQUESTS.replace("[$window]", "[5m]")}, "requests", "must range over $window"),
        (
            {"requests": REQUESTS.replace('version=~"$versions"', 'version=~".+"')},
            "requests",
            "must select by $versions",
        ),
        ({"requests": REQUESTS.replace("code)", "status)")}, "requests", "drops code"),
        ({"requests": REQUESTS, "status_label": "status"}, "requests", "drops status"),
        (
            {"requests": REQUESTS.replace("sum by (namespace, version, code)", "sum without (version)")},
            "requests",
            "drops version",
        ),
        ({"requests": REQUESTS, "latency_buckets": BUCKETS.replace("le)", "code)")}, "latency_buckets", "drops le"),
        ({"requests": REQUESTS.replace('"$versions"', '"$versions|evil"')}, "requests", "write ${versions}, braced"),
        ({"requests": REQUESTS.replace('"$versions"', "'$versions'")}, "requests", "double-quoted label matcher"),
        (
            {"requests": REQUESTS.replace('version=~"$versions"', 'version="${versions}-v.*"')},
            "requests",
            "need a regex matcher, =~",
        ),
        ({"requests": REQUESTS.replace('version=~"$versions"', 'version!~"$versions"')}, "requests", "with = or =~"),
        ({"requests": REQUESTS.replace("$namespace", "$ns")}, "requests", "unknown placeholder $ns"),
        ({"requests": REQUESTS.replace("[$window]", "[$window:1m]")}, "requests", "whole of a range selector"),
        ({"requests": REQUESTS + " or $versions"}, "requests", "belongs in a quoted label value"),
        ({"requests": REQUESTS + ")"}, "requests", "closes nothing open"),
        ({"requests": "sum(" + REQUESTS}, "requests", "is never closed"),
        ({"requests": REQUESTS.replace('"$namespace"', '"shop')}, "requests", "does not end"),
        ({"requests": REQUESTS + " ; drop"}, "requests", "unexpected ';'"),
        ({"requests": REQUESTS, "version_label": "0version"}, "version_label", "should match pattern"),
        ({"requests": REQUESTS, "latency_unit": "minutes"}, "latency_unit", "'seconds' or 'milliseconds'"),
        ({"requests": ""}, "requests", "at least 1 character"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 40 else None,
)
def test_a_malformed_template_is_refused_naming_its_field(fields: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(InvalidPolicy) as refused:
        load_policy("default", {"dialect": "custom", "custom_metrics": fields})
    [problem] = refused.value.problems
    assert problem.field == f"custom_metrics.{field}"
    assert words in problem.message


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"dialect": "custom"}, "required with dialect custom"),
        ({"custom_metrics": {"requests": REQUESTS}}, "set dialect: custom"),
    ],
)
def test_custom_queries_go_with_the_custom_dialect(overrides: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidPolicy) as refused:
        load_policy("default", overrides)
    assert refused.value.problems[0].field == "custom_metrics"
    assert words in refused.value.problems[0].message


@pytest.mark.parametrize("name", ['a"} or vector(1) or {x="', "a|b", "A", ".*"])
def test_a_name_is_checked_before_it_fills_a_placeholder(name: str) -> None:
    queries = queries_for(CustomMetrics(requests=REQUESTS))
    with pytest.raises(ValidationError) as refused:
        queries.counts_query([RevisionRef("shop", name)], 10)
    assert refused.value.problems[0].field == "revision"


def test_results_are_read_by_the_policys_labels() -> None:
    queries = queries_for(CustomMetrics(requests=REQUESTS, latency_buckets=BUCKETS, latency_unit="seconds"))
    labels = {"namespace": "shop", "version": "checkout-v2"}
    counts = [
        {"metric": {**labels, "code": "200"}, "value": [0, "90"]},
        {"metric": {**labels, "code": "503"}, "value": [0, "10"]},
        {"metric": {"namespace": "blog", "version": "checkout-v2", "code": "500"}, "value": [0, "7"]},
    ]
    buckets = [{"metric": {**labels, "le": "0.1"}, "value": [0, "60"]}]
    got = queries.parse(counts, buckets, TARGETS)
    assert (got[TARGETS[1]].requests, got[TARGETS[1]].errors) == (100, 10)  # blog's own version is apart
    assert got[TARGETS[1]].slow(100.0) == 40  # le 0.1 s is the 100 ms boundary
    assert got[TARGETS[0]].requests == 0


def test_without_a_namespace_label_versions_are_read_by_name_alone() -> None:
    template = 'sum by (svc, code)(increase(reqs{svc=~"$versions"}[$window]))'
    queries = queries_for(CustomMetrics(requests=template, version_label="svc", namespace_label=""))
    got = queries.parse([{"metric": {"svc": "web-v2", "code": "5xx"}, "value": [0, "3"]}], [], TARGETS[2:])
    assert (got[TARGETS[2]].requests, got[TARGETS[2]].errors, queries.has_buckets) == (3, 3, False)


def test_a_braced_placeholder_inside_a_regex_becomes_a_group_of_the_batch() -> None:
    template = (
        "sum by (namespace, version, envoy_response_code) (label_replace(label_replace("
        'increase(envoy_cluster_upstream_rq{envoy_cluster_name=~"${namespace}_${versions}_[0-9]+"}[$window]),'
        ' "namespace", "$1", "envoy_cluster_name", "([^_]+)_.*"),'
        ' "version", "$1", "envoy_cluster_name", "[^_]+_(.+)_[0-9]+"))'
    )
    spec = CustomMetrics(requests=template, status_label="envoy_response_code")
    query = queries_for(spec).counts_query(TARGETS[:2], 10)
    assert 'envoy_cluster_name=~"(?:shop)_(?:checkout\\\\-v1|checkout\\\\-v2)_[0-9]+"' in query
    assert '"$1"' in query and "[10s]" in query

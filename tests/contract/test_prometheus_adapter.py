"""The Prometheus adapter against a real Prometheus holding exactly known series."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from adapters.prometheus import PrometheusMetrics, PrometheusSettings
from cli.main import app
from policies import CustomMetrics, Dialect
from rollouts import PermanentError, TransientError, ValidationError
from rollouts.counts import RevisionRef
from rollouts.ports import MetricsSource
from sandbox.prometheus import PrometheusServer
from tests.promdata import SECONDS, Revision, backfilled_prometheus

REVISIONS = [
    Revision("shop", "checkout-00001", ok_per_second=20, errors_per_second=0, fast_share=0.9),
    Revision("shop", "checkout-00002", ok_per_second=4, errors_per_second=1, fast_share=0.5),
    Revision("shop", "cart-00007", ok_per_second=10, errors_per_second=0, fast_share=1.0, reset_at=150),
    Revision("blog", "web-00003", ok_per_second=3, errors_per_second=2, fast_share=0.0),
]
START = int(time.time()) - 3600  # an hour ago: well inside retention, well before the head block


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = backfilled_prometheus(tmp_path_factory.mktemp("prometheus"), REVISIONS, START)
    try:
        yield server
    finally:
        server.stop()


def queries_sent(metrics: PrometheusMetrics) -> list[str]:
    """The URLs of the queries the adapter sends from now on, seen on its HTTP session."""
    sent: list[str] = []
    metrics.session.hooks["response"].append(lambda answer, *args, **kwargs: sent.append(answer.request.url))
    return sent


def at(second: int) -> datetime:
    return datetime.fromtimestamp(START + second, tz=UTC)


@pytest.mark.parametrize("dialect", [d for d in Dialect if d is not Dialect.CUSTOM])
def test_counts_per_revision_for_a_batch_of_rollouts(prometheus: PrometheusServer, dialect: Dialect) -> None:
    metrics = PrometheusMetrics(PrometheusSettings(prometheus.url))
    sent = queries_sent(metrics)

    def ref(namespace: str, name: str) -> RevisionRef:  # an Istio version also names its service
        istio = dialect in (Dialect.ISTIO, Dialect.ISTIO_KNATIVE)
        return RevisionRef(namespace, name, name.split("-", 1)[0] if istio else "")

    targets = [ref(r.namespace, r.name) for r in REVISIONS] + [ref("shop", "idle-00001")]
    counts = metrics.fetch(dialect, targets, timedelta(seconds=10), at(100))
    assert len(sent) == 2  # one for counts, one for buckets, whatever the batch size

    for revision in REVISIONS:
        got = counts[ref(revision.namespace, revision.name)]
        expected = 10 * (revision.ok_per_second + revision.errors_per_second)
        assert got.requests == expected, revision
        assert got.errors == 10 * revision.errors_per_second, revision
        assert got.slow(100.0) == expected - round(10 * revision.ok_per_second * revision.fast_share) - round(
            10 * revision.errors_per_second * revision.fast_share
        ), revision
    idle = counts[ref("shop", "idle-00001")]
    assert (idle.requests, idle.errors, idle.buckets) == (0, 0, ())  # no series: no requests, not an error


def test_a_counter_reset_does_not_lose_or_invent_requests(prometheus: PrometheusServer) -> None:
    metrics = PrometheusMetrics(PrometheusSettings(prometheus.url))
    cart = RevisionRef("shop", "cart-00007")
    across_reset = metrics.fetch(Dialect.KNATIVE_OPENCENSUS, [cart], timedelta(seconds=10), at(155))[cart]
    # 10 requests/s; the pod restarts at second 150, so the requests of second 149..150 went with the
    # old pod's counter. increase() counts the other 90 and does not read the drop as -1440.
    assert across_reset.requests == 90


def test_a_range_for_replay_gives_consecutive_windows(prometheus: PrometheusServer) -> None:
    metrics = PrometheusMetrics(PrometheusSettings(prometheus.url))
    canary, stable = RevisionRef("shop", "checkout-00002"), RevisionRef("shop", "checkout-00001")
    samples = metrics.fetch_range(Dialect.KNATIVE_OTEL, [canary, stable], at(100), at(160), timedelta(seconds=10))
    assert [s.at for s in samples] == [at(100 + 10 * k) for k in range(1, 7)]
    assert {s.counts[canary].requests for s in samples} == {50}
    assert {s.counts[stable].errors for s in samples} == {0}


def test_a_malformed_query_is_permanent_with_prometheus_message(prometheus: PrometheusServer) -> None:
    metrics = PrometheusMetrics(PrometheusSettings(prometheus.url))
    with pytest.raises(PermanentError, match=r"Prometheus refused the query: .*parse error"):
        metrics.query("sum(rate(revision_app_request_count[10s])")


def test_names_are_checked_before_any_query() -> None:
    metrics = PrometheusMetrics(PrometheusSettings("http://127.0.0.1:9"))
    sent = queries_sent(metrics)
    with pytest.raises(ValidationError, match=r"revision: .* is not a valid name"):
        metrics.fetch(
            Dialect.KNATIVE_OPENCENSUS, [RevisionRef("shop", 'x"}) or vector(1) #')], timedelta(seconds=10), at(0)
        )
    assert sent == []


def test_an_outage_is_transient(tmp_path: Path) -> None:
    server = backfilled_prometheus(tmp_path, REVISIONS[:1], START)
    metrics = PrometheusMetrics(PrometheusSettings(server.url, timeout=1.0, retries=1, backoff=0.01))
    ref = RevisionRef("shop", "checkout-00001")
    assert (
        metrics.fetch(Dialect.KNATIVE_OPENCENSUS, [ref], timedelta(seconds=10), at(SECONDS // 2))[ref].requests == 200
    )
    assert metrics.ready()
    server.stop()
    with pytest.raises(TransientError, match="Prometheus unreachable"):
        metrics.fetch(Dialect.KNATIVE_OPENCENSUS, [ref], timedelta(seconds=10), at(SECONDS // 2))
    assert not metrics.ready()


def test_replay_builds_and_saves_a_trace_from_prometheus(prometheus: PrometheusServer, tmp_path: Path) -> None:
    saved = tmp_path / "from-prometheus.jsonl"
    arguments = ["replay", "--prometheus", prometheus.url, "--namespace", "shop", "--canary", "checkout-00002"]
    arguments += ["--stable", "checkout-00001", "--start", str(START + 100), "--end", str(START + 200)]
    arguments += ["--step", "10s", "--save", str(saved), "--json"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["decision"] == "rollback"  # 20 % errors against none
    lines = [json.loads(line) for line in saved.read_text().splitlines()]
    assert [line["t"] for line in lines] == [10.0 * k for k in range(1, 11)]
    assert {line["canary"]["requests"] for line in lines} == {50}
    assert {line["canary"]["buckets"]["+Inf"] for line in lines} == {50}
    replayed = CliRunner().invoke(app, ["replay", str(saved), "--json"])
    assert json.loads(replayed.stdout) == summary  # the saved trace replays to the same decision


def test_replay_reads_istio_versions_of_a_service(prometheus: PrometheusServer) -> None:
    arguments = ["replay", "--prometheus", prometheus.url, "--namespace", "shop", "--canary", "checkout-00002"]
    arguments += ["--stable", "checkout-00001", "--start", str(START + 100), "--end", str(START + 200)]
    arguments += ["--step", "10s", "--dialect", "istio", "--json"]
    missing = CliRunner().invoke(app, arguments)
    assert missing.exit_code == 2 and "--service is required" in missing.output
    result = CliRunner().invoke(app, [*arguments, "--service", "checkout"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["decision"] == "rollback"  # the same 20 % errors, read from the destination reporter only


# The custom dialect over Istio's series, read by version alone (the backfill's versions are unique).
CUSTOM_ISTIO = CustomMetrics(
    namespace_label="destination_workload_namespace",
    version_label="destination_version",
    status_label="response_code",
    latency_unit="milliseconds",
    requests=(
        "sum by (destination_workload_namespace, destination_version, response_code)"
        ' (increase(istio_requests_total{reporter="destination", destination_workload_namespace="$namespace",'
        ' destination_version=~"$versions"}[$window]))'
    ),
    latency_buckets=(
        "sum by (destination_workload_namespace, destination_version, le)"
        ' (increase(istio_request_duration_milliseconds_bucket{reporter="destination",'
        ' destination_workload_namespace="$namespace", destination_version=~"$versions"}[$window]))'
    ),
)


def test_a_custom_dialect_reads_a_batch_in_one_query_per_metric(prometheus: PrometheusServer) -> None:
    metrics = PrometheusMetrics(PrometheusSettings(prometheus.url))
    sent = queries_sent(metrics)
    targets = [RevisionRef(r.namespace, r.name) for r in REVISIONS]
    counts = metrics.fetch(CUSTOM_ISTIO, targets, timedelta(seconds=10), at(100))
    assert len(sent) == 2
    for revision in REVISIONS:
        got = counts[RevisionRef(revision.namespace, revision.name)]
        assert got.requests == 10 * (revision.ok_per_second + revision.errors_per_second), revision
        assert got.errors == 10 * revision.errors_per_second, revision
        assert got.slow(100.0) == round(
            10 * (revision.ok_per_second + revision.errors_per_second) * (1 - revision.fast_share)
        ), revision
    errors_only = CUSTOM_ISTIO.model_copy(update={"latency_buckets": None})
    checkout = RevisionRef("shop", "checkout-00002")
    assert metrics.fetch(errors_only, [checkout], timedelta(seconds=10), at(100))[checkout].errors == 10
    assert len(sent) == 3  # no buckets query when the policy reads none


def test_replay_reads_a_custom_dialect_from_a_policy_file(prometheus: PrometheusServer, tmp_path: Path) -> None:
    policy = tmp_path / "istio-custom.yaml"
    document = {"extends": "default", "dialect": "custom", "custom_metrics": CUSTOM_ISTIO.model_dump()}
    policy.write_text(yaml.safe_dump(document), encoding="utf-8")
    arguments = ["replay", "--prometheus", prometheus.url, "--namespace", "shop", "--canary", "checkout-00002"]
    arguments += ["--stable", "checkout-00001", "--start", str(START + 100), "--end", str(START + 200)]
    result = CliRunner().invoke(app, [*arguments, "--step", "10s", "--policy", str(policy), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["decision"] == "rollback"  # 20 % errors against none
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({**document, "custom_metrics": {"requests": "sum(x"}}), encoding="utf-8")
    refused = CliRunner().invoke(app, [*arguments, "--policy", str(broken)])
    assert refused.exit_code == 2 and "custom_metrics.requests" in refused.output


def test_a_placeholder_inside_a_regex_is_a_group_prometheus_reads(prometheus: PrometheusServer) -> None:
    spec = CustomMetrics(
        namespace_label="namespace_name",
        version_label="revision_name",
        status_label="response_code_class",
        requests=(
            "sum by (namespace_name, revision_name, response_code_class) (increase(revision_app_request_count"
            '{namespace_name="$namespace", revision_name=~"(${versions})"}[$window]))'
        ),
    )
    targets = [RevisionRef("shop", "checkout-00002"), RevisionRef("blog", "web-00003")]
    counts = PrometheusMetrics(PrometheusSettings(prometheus.url)).fetch(spec, targets, timedelta(seconds=10), at(100))
    assert [(counts[t].requests, counts[t].errors) for t in targets] == [(50, 10), (50, 20)]


@pytest.mark.parametrize("source", [Dialect.KNATIVE_OPENCENSUS, Dialect.ISTIO, CUSTOM_ISTIO], ids=str)
def test_several_windows_of_a_batch_are_read_in_the_same_two_queries(
    prometheus: PrometheusServer, source: MetricsSource
) -> None:
    metrics = PrometheusMetrics(PrometheusSettings(prometheus.url))
    istio = source is Dialect.ISTIO
    refs = [RevisionRef(r.namespace, r.name, r.name.split("-", 1)[0] if istio else "") for r in REVISIONS]
    windows = {10: refs[:2], 20: refs[2:], 30: refs}  # one revision may be judged over two windows
    sent = queries_sent(metrics)
    fetched = metrics.fetch_windows(source, windows, at(100))
    assert len(sent) == 2
    for window, members in windows.items():
        alone = metrics.fetch(source, members, timedelta(seconds=window), at(100))
        assert fetched[window] == alone, window
        assert all(alone[ref].requests > 0 for ref in members)

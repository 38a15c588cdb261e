"""PromQL for each metric dialect (design.md, "Metrics: dialects"), batched for many rollouts.

One query per metric per tick round for all due rollouts: the selector matches every namespace
and revision in the batch (`revision_name=~"a|b|c"`; for Istio also every service, as a version
label such as `v2` is only unique within its service) and the result is grouped by namespace,
(service,) revision and status, so the number of queries does not grow with the number of rollouts. Every
label value is checked to be a DNS-1123 name before a query is built, then escaped for PromQL's
regular expressions and strings: user input never reaches a query unchecked. Pure.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from policies import CustomMetrics, Dialect
from rollouts.counts import RevisionCounts, RevisionRef
from rollouts.names import require_dns1123_label


@dataclass(frozen=True)
class DialectQueries:
    dialect: Dialect
    namespace_label: str
    revision_label: str
    status_label: str
    count_metric: str
    bucket_metric: str
    ms_per_unit: float
    """How many milliseconds one unit of the histogram's `le` is."""
    service_label: str = ""
    """Where a version's name alone does not identify it (Istio's `version` label), the label of
    the service it belongs to; grouped by and matched as well."""
    fixed_selector: str = ""
    """Matchers every query carries (Istio: the destination sidecar's report only, so that a
    request is counted once)."""

    @property
    def _keys(self) -> str:
        labels = [self.namespace_label, *([self.service_label] if self.service_label else []), self.revision_label]
        return ", ".join(labels)

    @property
    def has_buckets(self) -> bool:
        """Whether latency buckets are read at all (a custom dialect may judge errors only)."""
        return True

    def counts_query(self, targets: Sequence[RevisionRef], window_seconds: int) -> str:
        """Requests per namespace, revision and status over the window ending at the query time."""
        return (
            f"sum by ({self._keys}, {self.status_label})"
            f"(increase({self.count_metric}{{{self._selector(targets)}}}[{window_seconds}s]))"
        )

    def buckets_query(self, targets: Sequence[RevisionRef], window_seconds: int) -> str:
        """Cumulative latency buckets per namespace and revision over the window."""
        return (
            f"sum by ({self._keys}, le)(increase({self.bucket_metric}{{{self._selector(targets)}}}[{window_seconds}s]))"
        )

    def _selector(self, targets: Sequence[RevisionRef]) -> str:
        if not targets:
            raise ValueError("a query needs at least one revision")
        namespaces = sorted({require_dns1123_label(t.namespace, "namespace") for t in targets})
        revisions = sorted({require_dns1123_label(t.revision, "revision") for t in targets})
        matchers = [
            *([self.fixed_selector] if self.fixed_selector else []),
            f'{self.namespace_label}=~"{_alternatives(namespaces)}"',
        ]
        if self.service_label:
            services = sorted({require_dns1123_label(t.service, "service") for t in targets})
            matchers.append(f'{self.service_label}=~"{_alternatives(services)}"')
        matchers.append(f'{self.revision_label}=~"{_alternatives(revisions)}"')
        return ",".join(matchers)

    def counts_query_windows(self, windows: Mapping[int, Sequence[RevisionRef]]) -> str:
        """`counts_query` for several windows at once, each result tagged with its window
        (`WINDOW_LABEL`): one request, however many windows a batch's rollouts need."""
        return _tagged({w: self.counts_query(refs, w) for w, refs in windows.items()})

    def buckets_query_windows(self, windows: Mapping[int, Sequence[RevisionRef]]) -> str:
        return _tagged({w: self.buckets_query(refs, w) for w, refs in windows.items()})

    def parse_windows(
        self,
        counts: Iterable[Mapping[str, Any]],
        buckets: Iterable[Mapping[str, Any]],
        windows: Mapping[int, Sequence[RevisionRef]],
    ) -> dict[int, dict[RevisionRef, RevisionCounts]]:
        """The results of the `*_windows` queries, split by window and parsed as `parse` does."""
        if len(windows) == 1:  # the plain query: its series carry no window
            [(window, refs)] = windows.items()
            return {window: self.parse(counts, buckets, refs)}
        counts_by, buckets_by = _by_window(counts), _by_window(buckets)
        return {w: self.parse(counts_by.get(w, []), buckets_by.get(w, []), refs) for w, refs in windows.items()}

    def is_error(self, status: str) -> bool:
        """A 5xx, whether the label holds the class ("5xx") or the code ("503")."""
        return status.startswith("5")

    def parse(
        self,
        counts: Iterable[Mapping[str, Any]],
        buckets: Iterable[Mapping[str, Any]],
        targets: Sequence[RevisionRef],
    ) -> dict[RevisionRef, RevisionCounts]:
        """Instant-query results (`[{"metric": {...}, "value": [t, "v"]}, ...]`) to counts per revision.

        A revision with no series served no requests in the window: zero counts, not an error.
        """

        # Keys as the series name them: without a service (or namespace) label, that is no part of it.
        def key(ref: RevisionRef) -> RevisionRef:
            return RevisionRef(
                ref.namespace if self.namespace_label else "",
                ref.revision,
                ref.service if self.service_label else "",
            )

        requests: dict[RevisionRef, float] = defaultdict(float)
        errors: dict[RevisionRef, float] = defaultdict(float)
        for series in counts:
            ref = self._ref(series["metric"])
            value = float(series["value"][1])
            requests[ref] += value
            if self.is_error(str(series["metric"].get(self.status_label, ""))):
                errors[ref] += value
        histogram: dict[RevisionRef, dict[float, float]] = defaultdict(dict)
        for series in buckets:
            le = str(series["metric"].get("le", ""))
            if le == "+Inf":
                continue
            boundary = round(float(le) * self.ms_per_unit, 6)
            histogram[self._ref(series["metric"])][boundary] = float(series["value"][1])
        return {
            ref: RevisionCounts.of(
                round(requests[key(ref)]),
                round(errors[key(ref)]),
                {b: round(c) for b, c in histogram[key(ref)].items()},
            )
            for ref in targets
        }

    def _ref(self, labels: Mapping[str, Any]) -> RevisionRef:
        service = str(labels.get(self.service_label, "")) if self.service_label else ""
        namespace = str(labels.get(self.namespace_label, "")) if self.namespace_label else ""
        return RevisionRef(namespace, str(labels.get(self.revision_label, "")), service)


WINDOW_LABEL = "autocanary_window"
"""The label a multi-window query puts on each series: the window, in seconds, it was counted over."""


def _tagged(queries: Mapping[int, str]) -> str:
    """One expression for several: each query's series labelled with its window, joined by `or`
    (the label keeps the windows' series apart, so `or` drops none)."""
    if len(queries) == 1:
        return next(iter(queries.values()))  # one window: the plain query
    return " or ".join(
        f'label_replace({query}, "{WINDOW_LABEL}", "{window}", "", "")' for window, query in sorted(queries.items())
    )


def _by_window(series: Iterable[Mapping[str, Any]]) -> dict[int, list[Mapping[str, Any]]]:
    """Series of a multi-window query by window."""
    found: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for one in series:
        found[int(one["metric"].get(WINDOW_LABEL, 0))].append(one)
    return found


_MATCHER_VALUE = re.compile(r'(=~?)(\s*)"((?:[^"\\]|\\.)*)"')
_IN_VALUE = re.compile(r"\$\{(namespace|versions)\}|\$(namespace|versions)\b")
_PLACEHOLDER_WINDOW = re.compile(r"\[\s*\$window\s*\]")


@dataclass(frozen=True)
class CustomQueries(DialectQueries):
    """A policy's own templates (`policies.custom_metrics`), filled in for one batch.

    `$namespace` and `$versions` become alternations of the batch's names, checked as DNS-1123
    labels and escaped exactly as the built-in dialects' selectors, and the matcher becomes `=~`
    (inside a regex, `${versions}` becomes the group `(?:a|b)`); `$window` becomes the window in
    seconds. The template was checked when the policy was
    loaded: these are its only placeholders, each standing where this substitution is safe.
    """

    requests_template: str = ""
    buckets_template: str | None = None

    @classmethod
    def of(cls, spec: CustomMetrics) -> CustomQueries:
        return cls(
            dialect=Dialect.CUSTOM,
            namespace_label=spec.namespace_label,
            revision_label=spec.version_label,
            status_label=spec.status_label,
            count_metric="",
            bucket_metric="",
            ms_per_unit=spec.ms_per_unit,
            requests_template=spec.requests,
            buckets_template=spec.latency_buckets,
        )

    @property
    def has_buckets(self) -> bool:
        return self.buckets_template is not None

    def counts_query(self, targets: Sequence[RevisionRef], window_seconds: int) -> str:
        return self._filled(self.requests_template, targets, window_seconds)

    def buckets_query(self, targets: Sequence[RevisionRef], window_seconds: int) -> str:
        if self.buckets_template is None:
            raise ValueError("this custom dialect reads no latency buckets")
        return self._filled(self.buckets_template, targets, window_seconds)

    def _filled(self, template: str, targets: Sequence[RevisionRef], window_seconds: int) -> str:
        if not targets:
            raise ValueError("a query needs at least one revision")
        names = {
            "namespace": sorted({require_dns1123_label(t.namespace, "namespace") for t in targets}),
            "versions": sorted({require_dns1123_label(t.revision, "revision") for t in targets}),
        }

        def matcher(found: re.Match[str]) -> str:
            operator, space, value = found.groups()
            if "$" not in value:
                return found.group(0)
            whole = _IN_VALUE.fullmatch(value)
            if whole:  # the value is one placeholder: "any of these names"
                return f'=~{space}"{_alternatives(names[whole.group(1) or whole.group(2)])}"'
            grouped = _IN_VALUE.sub(lambda m: f"(?:{_alternatives(names[m.group(1) or m.group(2)])})", value)
            return f'{operator}{space}"{grouped}"'

        filled = _MATCHER_VALUE.sub(matcher, template)
        return _PLACEHOLDER_WINDOW.sub(f"[{int(window_seconds)}s]", filled)


DIALECTS: dict[Dialect, DialectQueries] = {
    Dialect.KNATIVE_OPENCENSUS: DialectQueries(
        dialect=Dialect.KNATIVE_OPENCENSUS,
        namespace_label="namespace_name",
        revision_label="revision_name",
        status_label="response_code_class",
        count_metric="revision_app_request_count",
        bucket_metric="revision_app_request_latencies_bucket",
        ms_per_unit=1.0,
    ),
    Dialect.KNATIVE_OTEL: DialectQueries(
        dialect=Dialect.KNATIVE_OTEL,
        namespace_label="k8s_namespace_name",
        revision_label="kn_revision_name",
        status_label="http_response_status_code",
        count_metric="kn_serving_invocation_duration_seconds_count",
        bucket_metric="kn_serving_invocation_duration_seconds_bucket",
        ms_per_unit=1000.0,
    ),
    Dialect.ISTIO: DialectQueries(
        dialect=Dialect.ISTIO,
        namespace_label="destination_workload_namespace",
        service_label="destination_service_name",
        revision_label="destination_version",
        status_label="response_code",
        count_metric="istio_requests_total",
        bucket_metric="istio_request_duration_milliseconds_bucket",
        ms_per_unit=1.0,
        fixed_selector='reporter="destination"',
    ),
    Dialect.ISTIO_KNATIVE: DialectQueries(
        dialect=Dialect.ISTIO_KNATIVE,
        namespace_label="destination_workload_namespace",
        service_label="destination_canonical_service",
        revision_label="destination_canonical_revision",
        status_label="response_code",
        count_metric="istio_requests_total",
        bucket_metric="istio_request_duration_milliseconds_bucket",
        ms_per_unit=1.0,
        fixed_selector='reporter="destination"',
    ),
}


def queries_for(source: Dialect | CustomMetrics) -> DialectQueries:
    """The queries of a built-in dialect, or of a policy's `custom_metrics`."""
    if isinstance(source, CustomMetrics):
        return CustomQueries.of(source)
    if source is Dialect.CUSTOM:
        raise ValueError("the custom dialect's queries come from the policy's custom_metrics")
    return DIALECTS[source]


def _alternatives(values: Sequence[str]) -> str:
    """An RE2 alternation of literal values, escaped for a PromQL double-quoted string."""
    return "|".join(_promql_string(re.escape(value)) for value in values)


def _promql_string(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

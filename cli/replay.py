"""`autocanary replay`: backtest a policy on recorded traces, or on what a real Prometheus holds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError as PydanticValidationError
from rich.console import Console

from adapters.prometheus import PrometheusMetrics, PrometheusSettings
from analyzer.replay import ReplayResult, TraceError, TraceInterval, parse_trace, replay, trace_record
from cli.policy import read_policy_file
from policies import Dialect, InvalidPolicy, Policy, load_policy, parse_duration
from rollouts.counts import RevisionRef
from rollouts.errors import AutocanaryError, ValidationError
from rollouts.names import require_dns1123_label
from rollouts.verdict import Outcome

out = Console(highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)

_COLOURS = {
    Outcome.PASS: "green",
    Outcome.FAIL: "red",
    Outcome.INCONCLUSIVE: "yellow",
    Outcome.ERROR: "magenta",
}


def replay_command(
    traces: Annotated[list[Path] | None, typer.Argument(help="JSON Lines traces, one interval per line.")] = None,
    policy: Annotated[
        str, typer.Option(help="Built-in policy to replay, or a YAML policy file (`extends:` honoured).")
    ] = "default",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per trace: decision, t, reason.")] = False,
    prometheus: Annotated[str | None, typer.Option(help="Build the trace from this Prometheus instead.")] = None,
    namespace: Annotated[str | None, typer.Option(help="With --prometheus: the namespace.")] = None,
    canary: Annotated[
        str | None, typer.Option(help="With --prometheus: the canary revision (Istio: version label).")
    ] = None,
    stable: Annotated[
        str | None, typer.Option(help="With --prometheus: the stable revision (Istio: version label).")
    ] = None,
    start: Annotated[str | None, typer.Option(help="With --prometheus: RFC 3339 time or Unix seconds.")] = None,
    end: Annotated[str | None, typer.Option(help="With --prometheus: RFC 3339 time or Unix seconds.")] = None,
    step: Annotated[str, typer.Option(help="With --prometheus: the interval length, e.g. 10s.")] = "10s",
    save: Annotated[Path | None, typer.Option(help="With --prometheus: also write the trace here.")] = None,
    dialect: Annotated[
        Dialect | None, typer.Option(help="The metrics' dialect (default: the policy's); istio for Istio canaries.")
    ] = None,
    service: Annotated[
        str | None, typer.Option(help="With --prometheus --dialect istio: the service both versions belong to.")
    ] = None,
) -> None:
    """Backtest a policy: per interval the verdict and its evidence, then the decision.

    The decision replays the statistics, guardrails and minimum-sample rules; the step schedule
    is replayed on those verdicts only to tell when it would have promoted (`promote_t`), since a
    trace already holds the traffic each revision got.
    """
    try:
        if policy.endswith((".yaml", ".yml")):
            resolved = read_policy_file(Path(policy), exit_code=2)
            if dialect:
                resolved = Policy.model_validate({**resolved.model_dump(), "dialect": dialect})
        else:
            resolved = load_policy(policy, {"dialect": dialect.value} if dialect else None)
    except (InvalidPolicy, PydanticValidationError) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(code=2) from None
    try:
        if prometheus:
            if traces:
                raise ValidationError.single("traces", "give trace files or --prometheus, not both")
            where = _Where(namespace, canary, stable, service)
            intervals = _from_prometheus(resolved, prometheus, where, start, end, step, save)
            _report(resolved, "prometheus", replay(resolved, intervals), as_json)
            return
        if not traces:
            raise ValidationError.single("traces", "give at least one trace file, or --prometheus")
        for path in traces:
            try:
                with path.open(encoding="utf-8") as stream:
                    intervals = parse_trace(stream, resolved.metrics_source, str(path))
            except OSError as exc:
                raise ValidationError.single(str(path), f"cannot read: {exc.strerror or exc}") from None
            _report(resolved, str(path), replay(resolved, intervals), as_json)
    except (TraceError, AutocanaryError) as exc:
        err.print(f"[red]replay: {exc}[/]")
        raise typer.Exit(code=2) from None


def _report(policy: Policy, source: str, result: ReplayResult, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.summary()))  # noqa: T201 (machine-readable output, one line per trace)
        return
    out.print(f"[bold]{source}[/] with policy {policy.name}")
    for step in result.steps:
        verdict = step.verdict
        colour = _COLOURS[verdict.outcome]
        out.print(
            f"  t={step.interval.t:>7g}  [{colour}]{verdict.outcome.value:<12}[/] evidence {verdict.evidence:>9.3g}"
            f"  {verdict.sentence}"
        )
    if result.decision == "rollback":
        out.print(f"[bold red]decision: rollback at t={result.t:g}[/]: {result.reason}")
    else:
        out.print(f"[bold green]decision: no rollback[/]: {result.reason}")
        promoted = f"at t={result.promote_t:g}" if result.promote_t is not None else "not within the trace"
        out.print(f"schedule: promoted {promoted}")


@dataclass(frozen=True)
class _Where:
    """Which versions to read: a namespace, the canary and stable (revisions, or Istio versions of `service`)."""

    namespace: str | None
    canary: str | None
    stable: str | None
    service: str | None


def _from_prometheus(
    policy: Policy, url: str, where: _Where, start: str | None, end: str | None, step: str, save: Path | None
) -> list[TraceInterval]:
    namespace, canary, stable = where.namespace, where.canary, where.stable
    required = {"namespace": namespace, "canary": canary, "stable": stable, "start": start, "end": end}
    if policy.dialect is Dialect.ISTIO:
        required["service"] = where.service
    missing = [name for name, value in required.items() if not value]
    if missing:
        raise ValidationError.single(missing[0], f"--{missing[0]} is required with --prometheus")
    if not (namespace and canary and stable and start and end):  # narrowing for the type checker
        raise ValidationError.single("prometheus", "namespace, canary, stable, start and end are required")
    require_dns1123_label(namespace, "namespace")
    service = (
        require_dns1123_label(where.service, "service") if policy.dialect is Dialect.ISTIO and where.service else ""
    )
    canary_ref = RevisionRef(namespace, require_dns1123_label(canary, "canary"), service)
    stable_ref = RevisionRef(namespace, require_dns1123_label(stable, "stable"), service)
    begin, finish, length = _time(start, "start"), _time(end, "end"), parse_duration(step)
    if not isinstance(length, timedelta) or length < timedelta(seconds=1):
        raise ValidationError.single("step", f"{step!r} is not a duration of at least 1s")
    if finish <= begin:
        raise ValidationError.single("end", "must be after --start")
    samples = PrometheusMetrics(PrometheusSettings(url)).fetch_range(
        policy.metrics_source, [canary_ref, stable_ref], begin, finish, length
    )
    intervals = [
        TraceInterval((s.at - begin).total_seconds(), s.counts[canary_ref], s.counts[stable_ref]) for s in samples
    ]
    if save:
        lines = [json.dumps(trace_record(i.t, i.canary, i.stable, policy.metrics_source)) for i in intervals]
        save.write_text("\n".join(lines) + "\n", encoding="utf-8")
        err.print(f"trace of {len(intervals)} intervals saved to {save}")
    return intervals


def _time(text: str, field: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(text), tz=UTC)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError.single(field, f"{text!r} is neither RFC 3339 nor Unix seconds") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

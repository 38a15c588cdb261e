"""`autocanary rollout ...` and `autocanary api`: what pipelines and on-call engineers type."""

from __future__ import annotations

import json
import os
import time
from typing import Annotated, Any

import httpx
import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table
from tenacity import RetryCallState

from adapters import retry
from analyzer.verdict import format_evidence
from cli.client import AutocanaryClient, ClientError
from rollouts.model import ManualActionKind

app = typer.Typer(help="Register, follow and steer rollouts through the API.", no_args_is_help=True)
out = Console(highlight=False, soft_wrap=True)  # verdict sentences stay whole, for logs and grep
err = Console(stderr=True, soft_wrap=True, highlight=False)
SUCCESS_PHASES = {"succeeded"}
TERMINAL = {"succeeded", "rolled_back", "aborted", "superseded", "failed"}

Server = Annotated[str, typer.Option(envvar="AUTOCANARY_SERVER", help="API URL.")]
Token = Annotated[str, typer.Option(envvar="AUTOCANARY_TOKEN", help="Bearer token.")]


Reconnect = Annotated[
    float,
    typer.Option(
        envvar="AUTOCANARY_WATCH_RECONNECT_SECONDS",
        help="How long to keep resuming when the API cannot be reached mid-watch (a restart), in seconds.",
    ),
]
RETRYABLE_STATUSES = {502, 503, 504}
"""What a proxy or a restarting API answers for a moment: the watch resumes rather than fails."""


def client(server: str, token: str) -> AutocanaryClient:
    if not token:
        err.print("a token is needed: --token or AUTOCANARY_TOKEN")
        raise typer.Exit(code=2)
    return AutocanaryClient(server, token)


def fail(exc: Exception) -> typer.Exit:
    if isinstance(exc, httpx.HTTPError):
        err.print(f"[red]cannot reach the API: {exc}[/]")
    else:
        err.print(f"[red]{exc}[/]")
    return typer.Exit(code=2)


@app.command("create")
def create(
    namespace: str,
    service: Annotated[str | None, typer.Argument(help="The Knative Service (not with --istio).")] = None,
    server: Server = "http://127.0.0.1:8080",
    token: Token = "",
    canary: Annotated[str | None, typer.Option(help="Default: the latest created revision.")] = None,
    stable: Annotated[str | None, typer.Option(help="Default: the revision serving 100 %.")] = None,
    istio: Annotated[
        str | None,
        typer.Option("--istio", metavar="VIRTUAL_SERVICE", help="Roll out two subsets behind this VirtualService."),
    ] = None,
    stable_subset: Annotated[str | None, typer.Option(help="With --istio: the subset serving now, e.g. v1.")] = None,
    canary_subset: Annotated[str | None, typer.Option(help="With --istio: the subset to judge, e.g. v2.")] = None,
    route: Annotated[
        str | None, typer.Option(help="With --istio: the http route's name. Default: the one to both subsets.")
    ] = None,
    destination_rule: Annotated[
        str | None, typer.Option(help="With --istio. Default: the one DestinationRule for the route's host.")
    ] = None,
    http_route: Annotated[
        str | None,
        typer.Option("--http-route", metavar="HTTP_ROUTE", help="Roll out two backend Services of this HTTPRoute."),
    ] = None,
    stable_backend: Annotated[str | None, typer.Option(help="With --http-route: the Service serving now.")] = None,
    canary_backend: Annotated[str | None, typer.Option(help="With --http-route: the Service to judge.")] = None,
    rule: Annotated[
        str | None, typer.Option(help="With --http-route: the rule's name or index. Default: the one to both.")
    ] = None,
    policy: Annotated[str, typer.Option(help="A policy: built-in or the installation's own.")] = "default",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Policy override FIELD=YAML, e.g. steps=[10,50].")
    ] = None,
    label: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, e.g. commit=abc123.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Makes retries of the same request safe.")] = None,
    watch_: Annotated[bool, typer.Option("--watch", help="Then follow it (exit 0 only if it succeeds).")] = False,
    reconnect_seconds: Reconnect = 300.0,
) -> None:
    """Register a canary rollout: of a Knative Service (NAMESPACE SERVICE), of two Deployments
    behind an Istio VirtualService (NAMESPACE --istio VS --stable-subset v1 --canary-subset v2), or
    of two backend Services of a Gateway API HTTPRoute (NAMESPACE --http-route ROUTE
    --stable-backend SVC --canary-backend SVC)."""
    if http_route is not None and (istio is not None or service is not None):
        err.print("give one of a Knative SERVICE, --istio or --http-route")
        raise typer.Exit(code=2)
    mesh_target = _istio_target(namespace, service, istio, stable_subset, canary_subset, route, destination_rule)
    mesh_target = _gateway_target(namespace, http_route, stable_backend, canary_backend, rule) or mesh_target
    if mesh_target is None and service is None:
        err.print(
            "name the Knative SERVICE, --istio VIRTUAL_SERVICE with its subsets, or --http-route with its backends"
        )
        raise typer.Exit(code=2)
    overrides: dict[str, Any] = {}
    for item in set_ or []:
        key, _, value = item.partition("=")
        target = overrides
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = yaml.safe_load(value)
    labels = dict(item.partition("=")[::2] for item in label or [])
    api = client(server, token)
    try:
        rollout = api.create(
            namespace,
            service,
            canary=canary,
            stable=stable,
            policy=policy,
            overrides=overrides or None,
            labels=labels,
            idempotency_key=idempotency_key,
            target=mesh_target,
        )
    except (ClientError, httpx.HTTPError) as exc:
        raise fail(exc) from None
    out.print(rollout["id"])
    err.print(
        f"rollout {rollout['id']}: {rollout['canary_revision']} replacing {rollout['stable_revision']}"
        f" with policy {rollout['policy']}"
    )
    if watch_:
        raise typer.Exit(code=_watch(api, rollout["id"], reconnect_seconds))


def _target_line(target: dict[str, Any]) -> str:
    """Where the rollout moves traffic, in the words of its kind."""
    if target.get("kind") == "gateway-api":
        rule = target.get("route") or "the rule to both backends"
        return (
            f"gateway-api HTTPRoute {target['namespace']}/{target['name']} ({rule}):"
            f" Service {target['canary']} replacing {target['stable']}"
        )
    if target.get("kind") == "istio":
        route = target.get("route") or "the route to both subsets"
        return (
            f"istio VirtualService {target['namespace']}/{target['name']} ({route}, host {target.get('host')}):"
            f" subset {target['canary']} replacing {target['stable']}"
        )
    if not target:
        return ""
    line = f"knative Service {target['namespace']}/{target['name']}: {target['canary']} replacing {target['stable']}"
    if target.get("canary_url"):
        line += f" (try it at {target['canary_url']}, tag {target.get('tag')})"
    return line


def _gateway_target(
    namespace: str, http_route: str | None, stable: str | None, canary: str | None, rule: str | None
) -> dict[str, Any] | None:
    """The Gateway API target the options name, or None without --http-route."""
    if http_route is None:
        given = [f for f, v in (("--stable-backend", stable), ("--canary-backend", canary), ("--rule", rule)) if v]
        if given:
            err.print(f"{given[0]} goes with --http-route")
            raise typer.Exit(code=2)
        return None
    if not stable or not canary:
        err.print("--http-route needs --stable-backend and --canary-backend")
        raise typer.Exit(code=2)
    target: dict[str, Any] = {
        "kind": "gateway-api",
        "namespace": namespace,
        "http_route": http_route,
        "stable_backend": stable,
        "canary_backend": canary,
    }
    if rule:
        target["rule"] = rule
    return target


def _istio_target(
    namespace: str,
    service: str | None,
    virtual_service: str | None,
    stable: str | None,
    canary: str | None,
    route: str | None,
    rule: str | None,
) -> dict[str, Any] | None:
    """The Istio target the options name, or None without --istio (then the subset options are errors)."""
    if virtual_service is None:
        given = [
            flag
            for flag, value in (
                ("--stable-subset", stable),
                ("--canary-subset", canary),
                ("--route", route),
                ("--destination-rule", rule),
            )
            if value
        ]
        if given:
            err.print(f"{given[0]} goes with --istio")
            raise typer.Exit(code=2)
        return None
    if service is not None:
        err.print("give either a Knative SERVICE or --istio, not both")
        raise typer.Exit(code=2)
    if not stable or not canary:
        err.print("--istio needs --stable-subset and --canary-subset")
        raise typer.Exit(code=2)
    target: dict[str, Any] = {
        "kind": "istio",
        "namespace": namespace,
        "virtual_service": virtual_service,
        "stable_subset": stable,
        "canary_subset": canary,
    }
    if route:
        target["route"] = route
    if rule:
        target["destination_rule"] = rule
    return target


@app.command("get")
def get(
    rollout_id: str,
    server: Server = "http://127.0.0.1:8080",
    token: Token = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A rollout: phase, step, weights, the last verdicts."""
    try:
        rollout = client(server, token).get(rollout_id)
    except (ClientError, httpx.HTTPError) as exc:
        raise fail(exc) from None
    if as_json:
        out.print_json(json.dumps(rollout))
        return
    out.print(
        f"[bold]{rollout['id']}[/] {rollout['namespace']}/{rollout['service']}  [bold]{rollout['phase']}[/]"
        f"  step {rollout['step']}/{rollout['steps']}  canary {rollout['canary_weight']} %"
    )
    out.print(f"  {_target_line(rollout.get('target') or {})}")
    if rollout["reason"]:
        out.print(f"  {rollout['reason']}")
    out.print(f"  {_evidence_line(rollout)}")
    for verdict in rollout["last_verdicts"][:5]:
        out.print(f"  {verdict['at'][11:19]} {verdict['outcome']:<12} {verdict['sentence']}")


def _evidence_line(rollout: dict[str, Any]) -> str:
    """Both evidences beside the values they are judged against."""
    against, limit = rollout.get("evidence"), rollout.get("evidence_threshold")
    line = f"evidence against the canary {_e_value(against)} (rolled back at {_e_value(limit)})"
    if rollout.get("no_worse_threshold") is not None:
        line += (
            f"; that it is no worse {_e_value(rollout.get('no_worse_evidence'))}"
            f" (a step may end early at {_e_value(rollout['no_worse_threshold'])})"
        )
    return line


def _e_value(value: object) -> str:
    return format_evidence(value) if isinstance(value, int | float) else "n/a"


@app.command("list")
def list_(
    server: Server = "http://127.0.0.1:8080",
    token: Token = "",
    namespace: str | None = None,
    service: str | None = None,
    phase: str | None = None,
    limit: int = 50,
) -> None:
    """Rollouts, newest first."""
    try:
        page = client(server, token).list_rollouts(namespace=namespace, service=service, phase=phase, limit=limit)
    except (ClientError, httpx.HTTPError) as exc:
        raise fail(exc) from None
    table = Table()
    table.add_column("id", no_wrap=True, min_width=12)  # people copy it from here: never cut
    for column in ("service", "canary", "phase", "step", "canary %", "created"):
        table.add_column(column, overflow="fold")  # squeezed columns wrap, they do not lose characters
    for r in page["items"]:
        table.add_row(
            r["id"],
            f"{r['namespace']}/{r['service']}",
            r["canary_revision"],
            r["phase"],
            f"{r['step']}/{r['steps']}",
            str(r["canary_weight"]),
            r["created_at"][:19],
        )
    out.print(table)


@app.command("watch")
def watch(
    rollout_id: str,
    server: Server = "http://127.0.0.1:8080",
    token: Token = "",
    reconnect_seconds: Reconnect = 300.0,
) -> None:
    """Follow a rollout live; exit 0 if it succeeds, 1 if it is rolled back, aborted or otherwise ends.

    Exit 2 when the API refuses the request or stays unreachable for longer than --reconnect-seconds.
    """
    raise typer.Exit(code=_watch(client(server, token), rollout_id, reconnect_seconds))


def _watch(client: AutocanaryClient, rollout_id: str, reconnect_seconds: float = 300.0) -> int:
    """Show the rollout's events until it ends, resuming after the last one seen if the API goes away.

    A pipeline gate must not fail because an API replica restarted: the stream is resumed with
    `Last-Event-ID`, so no event is shown twice or lost.
    """
    try:
        rollout = client.get(rollout_id)
    except (ClientError, httpx.HTTPError) as exc:
        raise fail(exc) from None
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[weights]}"))
    seen: list[str] = []  # the id of the last event shown; a resumed stream starts after it
    outage: list[float] = []  # when the API was found unreachable, until a stream is accepted again

    def outage_seconds() -> float:
        return time.monotonic() - outage[0] if outage else 0.0

    with Progress(*columns, console=out, transient=False) as progress:
        bar = progress.add_task(
            f"{rollout['service']} step 0/{rollout['steps']}", total=rollout["steps"] + 1, weights="canary 0 %"
        )

        def follow() -> dict[str, Any]:
            nonlocal rollout
            try:
                for event in client.stream(rollout_id, after=seen[-1] if seen else None, on_connect=outage.clear):
                    if event["kind"] == "end":
                        return client.get(rollout_id)
                    rollout = _show_event(progress, bar, client, rollout_id, rollout, event)
                    seen[:] = [event["id"]]  # only once shown: a read failing above shows it again on resume
                raise httpx.RemoteProtocolError("the event stream stopped before the rollout ended")
            except (ClientError, httpx.TransportError):
                outage[:] = outage or [time.monotonic()]
                raise

        def lost(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            progress.console.print(f"[yellow]lost the API ({error}); resuming[/]")

        try:
            final = retry.reconnects(_retryable, outage_seconds, reconnect_seconds, before_sleep=lost)(follow)
        except (ClientError, httpx.TransportError) as exc:
            raise fail(exc) from None
    out.print(f"[bold]{final['phase']}[/]: {final['reason']}")
    return 0 if final["phase"] in SUCCESS_PHASES else 1


def _retryable(error: BaseException) -> bool:
    """A transport error, or an answer a restarting API or its proxy gives for a moment."""
    if isinstance(error, ClientError):
        return error.status in RETRYABLE_STATUSES
    return isinstance(error, httpx.TransportError)


def _show_event(
    progress: Progress,
    bar: TaskID,
    client: AutocanaryClient,
    rollout_id: str,
    rollout: dict[str, Any],
    event: dict[str, Any],
) -> dict[str, Any]:
    """Print one event and move the bar; the rollout as it now stands."""
    if event["kind"] != "verdict":  # a verdict changes no weights: spare the API a read
        rollout = client.get(rollout_id)
    done = rollout["steps"] + 1 if rollout["phase"] == "succeeded" else rollout["step"]
    position = f"{rollout['service']} step {rollout['step']}/{rollout['steps']}"
    weights = f"canary {rollout['canary_weight']} %  stable {rollout['stable_weight']} %"
    progress.update(bar, completed=done, description=position, weights=weights)
    if event["kind"] == "verdict":
        progress.console.print(f"  {event['at'][11:19]} {event['data'].get('outcome', ''):<12} {event['message']}")
    elif event["kind"] != "created":
        progress.console.print(f"[bold]{event['kind']}[/]: {event['message']}")
    return rollout


def _action(action: str) -> None:
    def command(
        rollout_id: str,
        reason: Annotated[str, typer.Option(help="Why (recorded with your token's name).")] = "",
        server: Server = "http://127.0.0.1:8080",
        token: Token = "",
    ) -> None:
        try:
            accepted = client(server, token).action(rollout_id, action, reason)
        except (ClientError, httpx.HTTPError) as exc:
            raise fail(exc) from None
        out.print(f"{action} of {rollout_id} accepted (actor {accepted['actor']}, phase was {accepted['phase']})")

    command.__doc__ = f"{action.capitalize()} a rollout (operator token)."
    app.command(action)(command)


for _kind in ManualActionKind:
    _action(_kind.value)


MAX_HEADER_BYTES = 16 * 1024
"""The largest request head (request line and headers) the API reads."""

SERVER_LIMITS: dict[str, Any] = {"http": "h11", "h11_max_incomplete_event_size": MAX_HEADER_BYTES}
"""Headers are read before any token is checked: h11 with a bounded buffer refuses a request
whose head exceeds `MAX_HEADER_BYTES` at once, instead of buffering 64 MiB of header."""


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="AUTOCANARY_API_WORKERS",
            help="API processes sharing the port (uvicorn's --workers); see the README's sizing.",
        ),
    ] = 1,
) -> None:
    """Serve the HTTP API (settings from AUTOCANARY_* variables)."""
    import uvicorn  # noqa: PLC0415 (only this command needs the server)

    uvicorn.run(
        "api.main:build",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=os.environ.get("AUTOCANARY_LOG_LEVEL", "warning"),
        **SERVER_LIMITS,
    )

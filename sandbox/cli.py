"""The `autocanary sandbox` commands: start the local cluster, find its kubeconfig, send load."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sandbox.cluster import ENDPOINTS_FILE, KUBECONFIG_FILE, Endpoints, SandboxOptions, run_sandbox
from sandbox.loadgen import drive
from sandbox.prometheus import PrometheusUnavailable

DEFAULT_STATE_DIR = Path(os.environ.get("AUTOCANARY_SANDBOX_STATE_DIR", ".state/sandbox"))

app = typer.Typer(help="A local Knative-like cluster for demos, tests and benchmarks.", no_args_is_help=True)
out = Console()
err = Console(stderr=True, soft_wrap=True)

StateDir = Annotated[Path, typer.Option("--state-dir", help="Where the kubeconfig and endpoints.json are written.")]


@app.command("up")
def up(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    apiserver_port: Annotated[int, typer.Option(help="0 picks a free port.")] = 0,
    gateway_port: Annotated[int, typer.Option(help="0 picks a free port.")] = 0,
    metrics_port: Annotated[int, typer.Option(help="0 picks a free port.")] = 0,
    prometheus: Annotated[bool, typer.Option(help="Start a private Prometheus scraping the sandbox.")] = True,
    prometheus_port: Annotated[int, typer.Option(help="0 picks a free port.")] = 0,
    scrape_interval: Annotated[str, typer.Option(help="Prometheus scrape interval.")] = "1s",
    reconcile_delay: Annotated[float, typer.Option(help="Seconds the controller waits after a change.")] = 0.2,
    ready_after: Annotated[float, typer.Option(help="Default seconds until a new revision is Ready.")] = 0.5,
    seed: Annotated[int | None, typer.Option(help="Seed the gateway's random choices.")] = None,
    tag_header_routing: Annotated[
        bool,
        typer.Option(
            help="Route `Knative-Serving-Tag: TAG` on a Service's URL to the tagged revision, as Knative does"
            " with `tag-header-based-routing: Enabled` in config-features."
        ),
    ] = True,
) -> None:
    """Start the sandbox; print the endpoints; stop cleanly on Ctrl-C or SIGTERM."""
    options = SandboxOptions(
        state_dir=state_dir,
        apiserver_port=apiserver_port,
        gateway_port=gateway_port,
        metrics_port=metrics_port,
        prometheus=prometheus,
        prometheus_port=prometheus_port,
        scrape_interval=scrape_interval,
        reconcile_delay=reconcile_delay,
        ready_after=ready_after,
        seed=seed,
        tag_header_routing=tag_header_routing,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await run_sandbox(options, stop, _print_endpoints)

    try:
        asyncio.run(main())
    except PrometheusUnavailable as exc:
        err.print(f"[red]sandbox: {exc}[/]")
        raise typer.Exit(code=1) from None
    except OSError as exc:
        err.print(f"[red]sandbox: cannot start: {exc}[/]")
        raise typer.Exit(code=1) from None
    err.print("sandbox stopped")


def _print_endpoints(endpoints: Endpoints) -> None:
    table = Table("endpoint", "address", title="autocanary sandbox is up")
    for name in ("apiserver", "gateway", "metrics", "prometheus", "kubeconfig"):
        table.add_row(name, getattr(endpoints, name) or "(off)")
    out.print(table)
    out.print(f"export KUBECONFIG={endpoints.kubeconfig}", highlight=False)
    out.print("Ctrl-C stops everything.", style="dim")


@app.command("kubeconfig")
def kubeconfig_path(state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """Print the path of the running sandbox's kubeconfig."""
    path = state_dir / KUBECONFIG_FILE
    if not (state_dir / ENDPOINTS_FILE).exists() or not path.exists():
        err.print(f"no sandbox is running with state in {state_dir}; start one with: autocanary sandbox up")
        raise typer.Exit(code=1)
    out.print(str(path.resolve()), highlight=False)


@app.command("load")
def load(
    host: Annotated[
        str, typer.Argument(help="The Host header: {service}.{namespace}.example.com, or a VirtualService host")
    ],
    rate: Annotated[float, typer.Option(help="Requests per second.")] = 20.0,
    header: Annotated[
        list[str] | None, typer.Option(help="NAME:VALUE sent with every request (for match routes); repeatable.")
    ] = None,
    duration: Annotated[float, typer.Option(help="Seconds to run.")] = 10.0,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    gateway: Annotated[str | None, typer.Option(help="Gateway URL (default: from the running sandbox).")] = None,
) -> None:
    """Drive a steady request rate through the gateway and show what answered."""
    if rate <= 0 or duration <= 0:
        err.print("--rate and --duration must be positive")
        raise typer.Exit(code=2)
    headers = {}
    for item in header or []:
        name, colon, value = item.partition(":")
        if not colon or not name.strip():
            err.print(f"--header {item!r}: want NAME:VALUE")
            raise typer.Exit(code=2)
        headers[name.strip()] = value.strip()
    if gateway is None:
        try:
            gateway = Endpoints.load(state_dir).gateway
        except FileNotFoundError:
            err.print(f"no sandbox is running with state in {state_dir}; pass --gateway or start one")
            raise typer.Exit(code=1) from None
    with out.status(f"sending {rate:g} requests/s to {host} for {duration:g}s") as status:
        result = asyncio.run(
            drive(
                gateway,
                host,
                rate,
                duration,
                on_progress=lambda r: status.update(f"{r.completed} answered"),
                headers=headers,
            )
        )
    table = Table("response", "count", title=f"{result.completed} responses in {result.seconds:.1f}s")
    for body, count in result.by_body.most_common():
        table.add_row(body, str(count))
    out.print(table)
    if result.failed_to_connect or result.shed:
        err.print(f"{result.failed_to_connect} failed to connect, {result.shed} shed (too many in flight)")

"""The `autocanary` command: one program for pipelines, on-call engineers and operators.

This is its composition root: each command group is a module of its own (`cli.policy`,
`cli.rollout` with `api`, `cli.replay`, `cli.worker` with `scheduler`), beside the sandbox's
`sandbox` and `demo`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli import policy
from cli import rollout as rollout_cli
from cli.replay import replay_command
from cli.worker import scheduler_app, worker_app
from sandbox import cli as sandbox_cli
from sandbox.demo import main as demo_main

app = typer.Typer(
    name="autocanary",
    help="Progressive delivery for Knative Services: canary rollouts judged by statistics.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(policy.app, name="policy")
app.add_typer(sandbox_cli.app, name="sandbox")
app.command("replay")(replay_command)
app.add_typer(rollout_cli.app, name="rollout")
app.command("api")(rollout_cli.serve)
app.add_typer(worker_app, name="worker")
app.add_typer(scheduler_app, name="scheduler")


@app.command("demo")
def demo(
    summary: Annotated[Path | None, typer.Option(help="Also write the outcome of each case as JSON here.")] = None,
) -> None:
    """Run the sandbox demo end to end: a canary promoted, one rolled back, one aborted by hand."""
    demo_main(summary)


def main() -> None:
    app()

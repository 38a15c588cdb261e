"""`autocanary policy`: list, show and validate rollout policies (the built-ins, or what an API knows)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import yaml
from rich.console import Console
from rich.table import Table

from cli import rollout as rollout_cli
from cli.client import ClientError
from policies import InvalidPolicy, Policy, builtin_names, format_duration, load_policy, parse_policy_document

app = typer.Typer(help="Inspect and validate rollout policies.", no_args_is_help=True)
out = Console()
err = Console(stderr=True, soft_wrap=True)  # error lines stay whole, for people and for grep


OptionalServer = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="AUTOCANARY_SERVER",
        help="Ask this API instead, to see the installation's own policies too (AUTOCANARY_SERVER).",
    ),
]


@app.command("list")
def policy_list(server: OptionalServer = None, token: rollout_cli.Token = "") -> None:
    """The policies, one line each: the built-ins, or with --server every policy that API knows."""
    table = Table()
    for column in ("name", "steps (%)", "per step", "interval", "alpha err/lat"):
        table.add_column(column, no_wrap=True)  # the description wraps, the names never get cut
    table.add_column("description", ratio=1)
    policies = _server_policies(server, token) if server else {name: load_policy(name) for name in builtin_names()}
    for name, policy in policies.items():
        table.add_row(
            name,
            " ".join(str(step) if isinstance(step, int) else "match" for step in policy.steps),
            _step_length(policy),
            format_duration(policy.interval),
            f"{policy.alpha_errors:g} / {policy.alpha_latency:g}",
            policy.description,
        )
    out.print(table)


def _step_length(policy: Policy) -> str:
    """`2m30s` for fixed steps; `30s-2m30s` for steps that end early once the canary is shown no worse."""
    longest = format_duration(policy.step_max_duration)
    return f"{format_duration(policy.step_min_duration)}-{longest}" if policy.ends_steps_early else longest


@app.command("show")
def policy_show(
    name: Annotated[str, typer.Argument(help="A policy name: built-in, or any the API knows with --server.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of YAML.")] = False,
    server: OptionalServer = None,
    token: rollout_cli.Token = "",
) -> None:
    """Every field of a policy, resolved (with what it extends)."""
    if server:
        try:
            policy = Policy.model_validate(rollout_cli.client(server, token).policy(name))
        except (ClientError, httpx.HTTPError) as exc:
            raise rollout_cli.fail(exc) from None
    else:
        try:
            policy = load_policy(name)
        except InvalidPolicy as exc:
            _print_problems(exc)
            raise typer.Exit(code=1) from None
    _print_policy(policy, as_json)


def _server_policies(server: str, token: str) -> dict[str, Policy]:
    try:
        found = rollout_cli.client(server, token).policies()
    except (ClientError, httpx.HTTPError) as exc:
        raise rollout_cli.fail(exc) from None
    return {name: Policy.model_validate(data) for name, data in found.items()}


@app.command("validate")
def policy_validate(
    file: Annotated[Path, typer.Argument(help="A YAML policy file; `extends: NAME` starts from a built-in.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the resolved policy as JSON.")] = False,
) -> None:
    """Check a policy file; print the resolved policy, or every problem by field path (exit 1)."""
    policy = read_policy_file(file, exit_code=1)
    err.print(f"[green]{file}: valid[/]")
    _print_policy(policy, as_json)


def read_policy_file(file: Path, *, exit_code: int) -> Policy:
    """A YAML policy file resolved (`extends:` honoured); its problems printed, then exit."""
    try:
        with file.open(encoding="utf-8") as stream:  # a stream, so YAML errors name the file
            document = yaml.safe_load(stream)
    except OSError as exc:
        err.print(f"[red]cannot read {file}[/]: {exc.strerror or exc}")
        raise typer.Exit(code=exit_code) from None
    except yaml.YAMLError as exc:
        err.print(f"[red]{file} is not valid YAML[/]: {exc}")
        raise typer.Exit(code=exit_code) from None
    try:
        return parse_policy_document(document, source=str(file))
    except InvalidPolicy as exc:
        _print_problems(exc)
        raise typer.Exit(code=exit_code) from None


def _print_policy(policy: Policy, as_json: bool) -> None:
    data: dict[str, Any] = policy.model_dump(mode="json")
    if as_json:
        out.print_json(json.dumps(data))
    else:
        out.print(yaml.safe_dump(data, sort_keys=False).rstrip(), highlight=False, markup=False)


def _print_problems(error: InvalidPolicy) -> None:
    err.print(f"[red]invalid {error.source}[/]:")
    for problem in error.problems:
        err.print(f"  {problem.field or '(document)'}: {problem.message}", highlight=False, markup=False)

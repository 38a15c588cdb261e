"""The `autocanary rollout` and `policy` commands against a live API over real HTTP.

The API runs under uvicorn on a loopback port with a real Redis (the cluster is the in-memory
fake); the CLI is invoked as a user types it. A background thread plays the worker's part by
writing events and phases to the store, so each test controls exactly what the CLI sees.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner, Result

from adapters.redis_store import RolloutStore
from api.app import create_app
from api.deps import Dependencies
from api.settings import ApiSettings
from cli.main import app as cli
from cli.rollout import SERVER_LIMITS
from rollouts import Phase
from rollouts.log import LogEntry
from sandbox.prometheus import free_port
from tests.fakes import FakeCluster

TOKENS = "ci:deployer:deploy-secret,oncall:operator:op-secret,grafana:viewer:view-secret"
SECRETS = {"deployer": "deploy-secret", "operator": "op-secret", "viewer": "view-secret"}
runner = CliRunner()


@dataclass
class LiveApi:
    """The API app served by uvicorn in a thread; `restart()` is a replica going away and coming back."""

    store: RolloutStore
    cluster: FakeCluster
    port: int = field(default_factory=free_port)
    actions: list[tuple[str, list[Any]]] = field(default_factory=list)
    site_policies: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        deps = Dependencies(
            self.store,
            self.cluster.backends(),
            lambda task, args: self.actions.append((task, args)),
            {"redis": self.store.ping},
            site_policies=self.site_policies,
        )
        app = create_app(ApiSettings(tokens=TOKENS, sse_poll_ms=100), deps)
        config = uvicorn.Config(app, port=self.port, log_level="warning", timeout_graceful_shutdown=1, **SERVER_LIMITS)
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, name=f"api-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
            assert not self._thread.is_alive(), "the API did not stop"

    def restart(self, down_for: float) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()


@pytest.fixture
def live(store: RolloutStore) -> Iterator[LiveApi]:
    cluster = FakeCluster()
    cluster.add("shop", "checkout", {"checkout-00001": 0.0, "checkout-00002": 0.0})
    api = LiveApi(store, cluster, site_policies={"payments": {"extends": "conservative", "steps": [2, 20]}})
    api.start()
    try:
        yield api
    finally:
        api.stop()


def run(live: LiveApi, *args: str, role: str = "deployer") -> Result:
    """The command as a holder of a `role` token types it, with the server and token in the environment."""
    env = {"AUTOCANARY_SERVER": live.url, "AUTOCANARY_TOKEN": SECRETS[role]}
    return runner.invoke(cli, [*args], env=env)


def register(live: LiveApi) -> str:
    created = run(live, "rollout", "create", "shop", "checkout", "--label", "commit=abc123", "--set", "steps=[10,50]")
    assert created.exit_code == 0, created.output
    return created.stdout.strip()


def later(*steps: Callable[[], None], pause: float = 0.3) -> threading.Thread:
    """Run `steps` one after another in the background, `pause` apart (the worker's part)."""

    def play() -> None:
        for step in steps:
            time.sleep(pause)
            step()

    thread = threading.Thread(target=play, daemon=True)
    thread.start()
    return thread


def event(store: RolloutStore, rollout_id: str, kind: str, message: str, phase: str, **data: Any) -> Callable[[], None]:
    return lambda: store.append_events(rollout_id, [LogEntry(kind, message, datetime.now(UTC), phase, data=data)])


def end(store: RolloutStore, rollout_id: str, phase: Phase, kind: str, message: str) -> Callable[[], None]:
    def finish() -> None:
        rollout = store.get(rollout_id)
        assert rollout is not None
        now = datetime.now(UTC)
        store.save(
            rollout.with_phase(phase, now, message),
            token=None,
            next_tick=None,
            events=[LogEntry(kind, message, now, phase.value)],
        )

    return finish


def test_create_get_list_and_abort_as_a_pipeline_and_on_call_would(live: LiveApi) -> None:
    rollout_id = register(live)
    rollout = live.store.get(rollout_id)
    assert rollout is not None and rollout.policy.steps == (10, 50) and rollout.labels == {"commit": "abc123"}

    shown = run(live, "rollout", "get", rollout_id, role="viewer")
    assert shown.exit_code == 0 and f"{rollout_id} shop/checkout" in shown.stdout and "step 0/2" in shown.stdout
    assert "evidence against the canary n/a (rolled back at 200)" in shown.stdout
    assert "that it is no worse n/a (a step may end early at 100)" in shown.stdout
    listed = run(live, "rollout", "list", "--namespace", "shop", role="viewer")
    assert listed.exit_code == 0 and rollout_id in listed.stdout

    aborted = run(live, "rollout", "abort", rollout_id, "--reason", "pager: p99", role="operator")
    assert aborted.exit_code == 0, aborted.output
    assert "actor oncall" in aborted.stdout
    ((task, args),) = live.actions
    command = live.store.commands.claim(args[0], rollout_id, "worker-x", 30, time.time())
    assert task == "autocanary.control" and command is not None
    assert (command.kind.value, command.actor, command.reason) == ("abort", "oncall", "pager: p99")


def test_refusals_name_the_reason_and_exit_2(live: LiveApi) -> None:
    weak = run(live, "rollout", "abort", "abc", role="viewer")
    assert weak.exit_code == 2 and "403" in weak.stderr
    unknown = run(live, "rollout", "create", "shop", "ghost")
    assert unknown.exit_code == 2 and "service shop/ghost not found" in unknown.stderr and "(service)" in unknown.stderr
    live.stop()
    down = run(live, "rollout", "get", "abc", role="viewer")
    assert down.exit_code == 2 and "cannot reach the API" in down.stderr


@pytest.mark.parametrize(
    ("phase", "kind", "code"),
    [(Phase.SUCCEEDED, "promoted", 0), (Phase.ROLLED_BACK, "rolled_back", 1), (Phase.ABORTED, "aborted", 1)],
)
def test_watch_is_a_pipeline_gate(live: LiveApi, phase: Phase, kind: str, code: int) -> None:
    rollout_id = register(live)
    store = live.store
    sentence = "canary 5xx 2.1 % vs stable 0.4 % over 3,120 requests; evidence 142 >= 100"
    later(
        event(store, rollout_id, "started", "both revisions pinned", "progressing"),
        event(store, rollout_id, "verdict", sentence, "progressing", outcome="fail"),
        end(store, rollout_id, phase, kind, f"the rollout ended {phase.value}"),
    )
    watched = run(live, "rollout", "watch", rollout_id, role="viewer")
    assert watched.exit_code == code, watched.output
    assert sentence in watched.stdout
    assert f"{kind}: the rollout ended {phase.value}" in watched.stdout
    assert watched.stdout.rstrip().endswith(f"{phase.value}: the rollout ended {phase.value}")


def test_watch_resumes_after_an_api_restart_without_repeating_or_losing_an_event(live: LiveApi) -> None:
    rollout_id = register(live)
    store = live.store
    later(
        event(store, rollout_id, "verdict", "before the restart", "progressing", outcome="pass"),
        lambda: live.restart(down_for=1.0),
        event(store, rollout_id, "verdict", "while the API was away", "progressing", outcome="pass"),
        event(store, rollout_id, "verdict", "after the restart", "progressing", outcome="pass"),
        end(store, rollout_id, Phase.SUCCEEDED, "promoted", "canary promoted"),
        pause=0.5,
    )
    watched = run(live, "rollout", "watch", rollout_id, role="viewer")
    assert watched.exit_code == 0, watched.output
    assert "lost the API" in watched.stdout
    for message in ("before the restart", "while the API was away", "after the restart", "promoted: canary promoted"):
        assert watched.stdout.count(message) == 1, (message, watched.stdout)


def test_watch_gives_up_after_the_reconnect_budget(live: LiveApi) -> None:
    rollout_id = register(live)
    later(live.stop, pause=0.5)
    started = time.monotonic()
    watched = run(live, "rollout", "watch", rollout_id, "--reconnect-seconds", "2", role="viewer")
    assert watched.exit_code == 2, watched.output
    assert "cannot reach the API" in watched.stderr
    assert time.monotonic() - started < 30  # bounded: it did not wait for the default five minutes


def test_policy_list_and_show_ask_the_server_for_its_own_policies(live: LiveApi) -> None:
    local = runner.invoke(cli, ["policy", "list"], env={"AUTOCANARY_SERVER": ""})
    assert local.exit_code == 0 and "payments" not in local.stdout
    listed = run(live, "policy", "list", role="viewer")
    assert listed.exit_code == 0, listed.output
    assert "payments" in listed.stdout and "conservative" in listed.stdout
    shown = run(live, "policy", "show", "payments", "--json", role="viewer")
    assert shown.exit_code == 0, shown.output
    assert '"steps": [\n    2,\n    20\n  ]' in shown.stdout or '"steps": [2, 20]' in shown.stdout
    missing = run(live, "policy", "show", "nope", role="viewer")
    assert missing.exit_code == 2 and "no policy 'nope'" in missing.stderr


def test_the_reconnect_budget_counts_one_outage_not_all_of_them(live: LiveApi) -> None:
    rollout_id = register(live)
    later(
        lambda: live.restart(down_for=1.0),
        lambda: live.restart(down_for=1.0),  # two outages, each within the 2 s budget, more in all
        end(live.store, rollout_id, Phase.SUCCEEDED, "promoted", "canary promoted"),
        pause=1.0,
    )
    watched = run(live, "rollout", "watch", rollout_id, "--reconnect-seconds", "2", role="viewer")
    assert watched.exit_code == 0, watched.output
    assert watched.stdout.count("lost the API") >= 2


def test_an_unexpected_error_is_one_json_500_and_the_connection_stays_usable(
    live: LiveApi, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rollout_id = register(live)

    async def broken(rollout_id: str) -> Any:
        raise RuntimeError("a bug")

    headers = {"Authorization": f"Bearer {SECRETS['viewer']}"}
    with httpx.Client(base_url=live.url, headers=headers) as client:  # one keep-alive connection
        monkeypatch.setattr(live.store.reads, "freshness", broken)
        failed = client.get(f"/v1/rollouts/{rollout_id}")
        monkeypatch.undo()
        assert (failed.status_code, failed.json()["error"]) == (500, "internal_error")
        assert "a bug" not in failed.text  # no internals to the caller
        assert client.get(f"/v1/rollouts/{rollout_id}").status_code == 200  # the same connection goes on
    logged = [r for r in caplog.records if r.exc_info and "a bug" in str(r.exc_info[1])]
    assert len(logged) == 1, [r.getMessage() for r in logged]


def test_an_oversized_request_head_is_refused_before_it_is_buffered(live: LiveApi) -> None:
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: ")
        try:
            for _ in range(64):  # up to 4 MiB; the server refuses long before
                connection.sendall(b"a" * 65_536)
        except OSError:
            pass  # closed on us mid-send: refused
        answer = connection.recv(4096)
    assert answer == b"" or answer.split(b" ", 2)[1] in (b"400", b"431"), answer[:200]
    assert httpx.get(f"{live.url}/healthz", timeout=5).status_code == 200  # the server is fine

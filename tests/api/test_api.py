"""The HTTP API with the real app and a real Redis (the cluster is the in-memory fake)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis as redis_module
from fastapi.testclient import TestClient

from adapters.redis_store import RolloutStore
from api.app import create_app
from api.auth import TokenBook
from api.deps import Dependencies, get_deps
from api.settings import ApiSettings
from api.shown import ShownRollouts
from api.sse import FollowedLog
from rollouts import ManualActionKind, Phase
from rollouts.log import LogEntry
from sandbox.prometheus import free_port
from tests.fakes import FakeCluster
from tests.knative import wait_for

TOKENS = "ci:deployer:deploy-secret,oncall:operator:op-secret,grafana:viewer:view-secret"
VIEW, DEPLOY, OPERATE = ({"Authorization": f"Bearer {t}"} for t in ("view-secret", "deploy-secret", "op-secret"))


class Queue:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list[Any]]] = []

    def __call__(self, task: str, args: list[Any]) -> None:
        self.sent.append((task, args))


@pytest.fixture
def cluster() -> FakeCluster:
    cluster = FakeCluster()
    cluster.add("shop", "checkout", {"checkout-00001": 0.0, "checkout-00002": 0.0})
    cluster.add("shop", "cart", {"cart-00001": 0.0, "cart-00002": 0.0})
    return cluster


@pytest.fixture
def queue() -> Queue:
    return Queue()


@pytest.fixture
def api(store: RolloutStore, cluster: FakeCluster, queue: Queue) -> Iterator[TestClient]:
    probes = {"redis": store.ping, "prometheus": lambda: True, "kubernetes": lambda: not cluster.unreachable}
    app = create_app(
        ApiSettings(tokens=TOKENS, max_body_bytes=4096, sse_poll_ms=100),
        Dependencies(store, cluster.backends(), queue, probes),
    )
    with TestClient(app) as client:  # server exceptions raise here: only a handled error may answer
        yield client


def shown_once(api: TestClient, rollout_id: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """`GET /v1/rollouts/{id}` until `check` holds: a change made in Redis by another process shows
    once the API has read its announcement (milliseconds; api/shown.py), so within 2 s or never."""
    deadline = time.monotonic() + 2
    while True:
        shown: dict[str, Any] = api.get(f"/v1/rollouts/{rollout_id}", headers=VIEW).json()
        if check(shown) or time.monotonic() > deadline:
            return shown
        time.sleep(0.01)


def create(api: TestClient, headers: dict[str, str] | None = None, **body: Any) -> Any:
    return api.post(
        "/v1/rollouts", json={"namespace": "shop", "service": "checkout", **body}, headers=headers or DEPLOY
    )


def test_register_defaults_the_revisions_and_answers_201_with_a_location(api: TestClient) -> None:
    response = create(api, labels={"commit": "abc123"})
    assert response.status_code == 201, response.text
    rollout = response.json()
    assert response.headers["Location"] == f"/v1/rollouts/{rollout['id']}"
    assert (rollout["stable_revision"], rollout["canary_revision"]) == ("checkout-00001", "checkout-00002")
    assert (rollout["phase"], rollout["policy"], rollout["labels"]) == ("pending", "default", {"commit": "abc123"})
    assert (rollout["step"], rollout["steps"], rollout["canary_weight"]) == (0, 4, 0)


@pytest.mark.parametrize(
    ("body", "status", "field", "words"),
    [
        ({"service": "ghost"}, 404, "service", "service shop/ghost not found"),
        ({"canary_revision": "checkout-00009"}, 404, "canary_revision", "revision checkout-00009 not found"),
        ({"canary_revision": "checkout-00001"}, 422, "canary_revision", "canary and stable are both checkout-00001"),
        ({"policy": "yolo"}, 422, "policy", "unknown policy 'yolo'"),
        ({"policy_overrides": {"steps": [50, 10]}}, 422, "policy_overrides.steps", "strictly increasing"),
        ({"policy_overrides": {"stepz": [5]}}, 422, "policy_overrides.stepz", "did you mean 'steps'"),
        ({"namespace": "Shop"}, 422, "namespace", "pattern"),
        ({"surprise": 1}, 422, "surprise", "Extra inputs"),
    ],
    ids=[
        "unknown-service",
        "unknown-revision",
        "same-revision",
        "unknown-policy",
        "bad-steps",
        "typo",
        "bad-name",
        "extra",
    ],
)
def test_bad_requests_name_the_field_and_change_nothing(
    api: TestClient, store: RolloutStore, body: dict[str, Any], status: int, field: str, words: str
) -> None:
    response = create(api, **body)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["field"] == field
    assert words in error["message"]
    assert set(error) >= {"error", "message", "field"}
    assert store.list_rollouts().rollouts == []


def test_no_stable_revision_at_100_percent_must_be_named(api: TestClient, cluster: FakeCluster) -> None:
    cluster.edit("shop", "checkout", {"checkout-00001": 60, "checkout-00002": 40})
    response = create(api)
    assert (response.status_code, response.json()["field"]) == (422, "stable_revision")
    assert create(api, stable_revision="checkout-00001").status_code == 201


def test_one_active_rollout_per_service_is_409_with_its_id(api: TestClient) -> None:
    first = create(api).json()
    second = create(api)
    assert second.status_code == 409
    assert second.json()["rollout_id"] == first["id"]


def test_idempotency_key_returns_the_same_rollout_or_422_for_another_body(api: TestClient) -> None:
    headers = {**DEPLOY, "Idempotency-Key": "pipeline-run-7"}
    first = create(api, headers)
    again = create(api, headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["id"] == first.json()["id"]
    other = api.post("/v1/rollouts", json={"namespace": "shop", "service": "cart"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["error"] == "idempotency_key_reused"


@pytest.mark.parametrize(
    ("method", "path", "needs"),
    [
        ("get", "/v1/rollouts", "viewer"),
        ("get", "/v1/policies", "viewer"),
        ("get", "/v1/policies/default", "viewer"),
        ("post", "/v1/rollouts", "deployer"),
        ("post", "/v1/rollouts/abc/abort", "operator"),
        ("post", "/v1/rollouts/abc/pause", "operator"),
        ("post", "/v1/rollouts/abc/resume", "operator"),
        ("post", "/v1/rollouts/abc/promote", "operator"),
    ],
)
def test_role_boundaries(api: TestClient, method: str, path: str, needs: str) -> None:
    order = ["viewer", "deployer", "operator"]
    body = {"json": {"namespace": "shop", "service": "checkout"}} if path == "/v1/rollouts" and method == "post" else {}
    assert getattr(api, method)(path, **body).status_code == 401
    assert getattr(api, method)(path, headers={"Authorization": "Bearer nope"}, **body).status_code == 401
    for role, headers in zip(order, (VIEW, DEPLOY, OPERATE), strict=True):
        status = getattr(api, method)(path, headers=headers, **body).status_code
        if order.index(role) < order.index(needs):
            assert status == 403, (role, status)
        else:
            assert status not in (401, 403), (role, status)


def test_get_one_shows_step_weights_verdicts_and_evidence(api: TestClient, store: RolloutStore) -> None:
    rollout_id = create(api).json()["id"]
    now = datetime.now(UTC)
    store.append_events(
        rollout_id,
        [
            LogEntry(
                "verdict",
                "errors: canary 5xx 0.10 % vs stable 0.12 %; evidence 0.8 < 200",
                now,
                "progressing",
                data={"outcome": "pass", "evidence": 0.8, "canary_requests": 50, "stable_requests": 950},
            )
        ],
    )
    shown = api.get(f"/v1/rollouts/{rollout_id}", headers=VIEW).json()
    assert shown["last_verdicts"][0]["sentence"].startswith("errors: canary 5xx 0.10 %")
    assert (shown["evidence"], shown["last_verdicts"][0]["canary_requests"]) == (0.8, 50)
    assert (shown["evidence_threshold"], shown["no_worse_evidence"], shown["no_worse_threshold"]) == (200, None, 100)
    store.append_events(
        rollout_id,
        [
            LogEntry(
                "verdict",
                "errors: canary 5xx 0.10 % vs stable 0.12 %; evidence 0.5 < 200",
                now,
                "progressing",
                data={"outcome": "pass", "evidence": 0.5, "no_worse_evidence": 37.5, "canary_requests": 50},
            )
        ],
    )
    shown = shown_once(api, rollout_id, lambda answer: answer["no_worse_evidence"] is not None)
    assert (shown["no_worse_evidence"], shown["last_verdicts"][0]["no_worse_evidence"]) == (37.5, 37.5)
    assert api.get("/v1/rollouts/nope", headers=VIEW).status_code == 404


def test_list_filters_and_paginates(api: TestClient) -> None:
    create(api)
    create(api, service="cart")
    page = api.get("/v1/rollouts", params={"limit": 1}, headers=VIEW).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    rest = api.get("/v1/rollouts", params={"limit": 1, "cursor": page["next_cursor"]}, headers=VIEW).json()
    assert {page["items"][0]["service"], rest["items"][0]["service"]} == {"checkout", "cart"}
    only = api.get("/v1/rollouts", params={"service": "cart", "phase": "pending"}, headers=VIEW).json()
    assert [r["service"] for r in only["items"]] == ["cart"]
    assert api.get("/v1/rollouts", params={"phase": "bogus"}, headers=VIEW).json()["field"] == "phase"
    bad_cursor = api.get("/v1/rollouts", params={"cursor": "933+84:l"}, headers=VIEW)
    assert (bad_cursor.status_code, bad_cursor.json()["field"]) == (422, "cursor")


def test_actions_are_stored_then_queued_with_the_token_name_as_actor(
    api: TestClient, queue: Queue, store: RolloutStore
) -> None:
    rollout_id = create(api).json()["id"]
    response = api.post(f"/v1/rollouts/{rollout_id}/abort", json={"reason": "pager"}, headers=OPERATE)
    assert response.status_code == 202
    body = response.json()
    assert {k: v for k, v in body.items() if k != "command_id"} == {
        "rollout_id": rollout_id,
        "action": "abort",
        "actor": "oncall",
        "phase": "pending",
    }
    task, args = queue.sent[-1]
    assert (task, args) == ("autocanary.control", [body["command_id"]])
    # Durable before the answer: any worker can claim it from Redis, whatever became of the message.
    command = store.commands.claim(body["command_id"], rollout_id, "worker-x", 30, time.time())
    assert command is not None
    assert (command.kind, command.actor, command.reason, command.applied) == (
        ManualActionKind.ABORT,
        "oncall",
        "pager",
        False,
    )


def test_an_action_answered_202_is_stored_even_when_the_broker_fails(store: RolloutStore, cluster: FakeCluster) -> None:
    def broken(task: str, args: list[Any]) -> None:
        raise ConnectionError("broker unreachable")

    app = create_app(ApiSettings(tokens=TOKENS), Dependencies(store, cluster.backends(), broken, {"redis": store.ping}))
    with TestClient(app) as client:
        rollout_id = create(client).json()["id"]
        response = client.post(f"/v1/rollouts/{rollout_id}/abort", json={"reason": "pager"}, headers=OPERATE)
    assert response.status_code == 202
    assert store.commands.pending() == 1  # the scheduler sends it again: tests/contract/test_commands.py


def test_an_action_the_phase_does_not_allow_is_409_with_the_phase(api: TestClient, queue: Queue) -> None:
    rollout_id = create(api).json()["id"]
    response = api.post(f"/v1/rollouts/{rollout_id}/resume", headers=OPERATE)
    assert response.status_code == 409
    assert (response.json()["phase"], response.json()["error"]) == ("pending", "conflict")
    assert queue.sent == []


def test_events_in_order_as_json_and_as_a_live_stream(api: TestClient, store: RolloutStore) -> None:
    rollout_id = create(api).json()["id"]
    as_json = api.get(f"/v1/rollouts/{rollout_id}/events", headers=VIEW).json()
    assert [e["kind"] for e in as_json] == ["created"]

    def later() -> None:
        time.sleep(0.3)
        rollout = store.get(rollout_id)
        assert rollout is not None
        now = datetime.now(UTC)
        store.append_events(
            rollout_id,
            [LogEntry("started", "one", now, "initializing"), LogEntry("verdict", "two", now, "progressing")],
        )
        time.sleep(0.2)
        store.save(
            rollout.with_phase(Phase.ABORTED, now, "done"),
            token=None,
            next_tick=None,
            events=[LogEntry("aborted", "three", now, "aborted")],
        )

    threading.Thread(target=later).start()
    kinds, ids = [], []
    with api.stream(
        "GET", f"/v1/rollouts/{rollout_id}/events", headers={**VIEW, "Accept": "text/event-stream"}
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kinds.append(line.removeprefix("event: "))
            if line.startswith("data: ") and kinds[-1] != "end":
                ids.append(json.loads(line.removeprefix("data: "))["id"])
    assert kinds == ["created", "started", "verdict", "aborted", "end"]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))


def test_policies_are_listed_and_shown(api: TestClient) -> None:
    assert set(api.get("/v1/policies", headers=VIEW).json()) == {
        "default",
        "conservative",
        "fast",
        "demo",
        "gateway-api-istio",
    }
    assert api.get("/v1/policies/fast", headers=VIEW).json()["steps"] == [10, 30, 60]
    missing = api.get("/v1/policies/nope", headers=VIEW)
    assert (missing.status_code, missing.json()["field"]) == (404, "name")


def test_site_policies_are_listed_and_used_at_registration(
    store: RolloutStore, cluster: FakeCluster, queue: Queue
) -> None:
    site = {"payments": {"extends": "conservative", "steps": [2, 20]}}
    probes = {"redis": store.ping}
    app = create_app(
        ApiSettings(tokens=TOKENS), Dependencies(store, cluster.backends(), queue, probes, site_policies=site)
    )
    with TestClient(app) as client:
        assert "payments" in client.get("/v1/policies", headers=VIEW).json()
        assert client.get("/v1/policies/payments", headers=VIEW).json()["steps"] == [2, 20]
        created = create(client, policy="payments", policy_overrides={"min_requests_per_step": 7})
        assert created.status_code == 201, created.text
        assert created.json()["policy"] == "payments"
        stored = store.get(created.json()["id"])
        assert stored is not None and stored.policy.steps == (2, 20) and stored.policy.min_requests_per_step == 7
        unknown = create(client, service="cart", policy="nope")
        assert unknown.status_code == 422 and "payments" in unknown.json()["message"]


def test_health_readiness_and_metrics(api: TestClient, cluster: FakeCluster) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {
        "ready": True,
        "checks": {"redis": True, "prometheus": True, "kubernetes": True},
    }
    cluster.unreachable = True
    not_ready = api.get("/readyz")
    assert (not_ready.status_code, not_ready.json()["checks"]["kubernetes"]) == (503, False)
    # What the Kubernetes probe asks: still able to take an abort, so still in the Service.
    redis_only = api.get("/readyz", params={"required": "redis"})
    assert redis_only.status_code == 200 and redis_only.json()["checks"]["kubernetes"] is False
    unknown = api.get("/readyz", params={"required": "redis,etcd"})
    assert (unknown.status_code, unknown.json()["field"]) == (422, "required") and "etcd" in unknown.json()["message"]
    empty = api.get("/readyz?required=")  # not "ready whatever the checks say"
    assert (empty.status_code, empty.json()["field"]) == (422, "required")
    cluster.unreachable = False
    create(api)
    text = api.get("/metrics").text
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] != "#"}
    assert values['autocanary_rollouts{phase="pending"}'] == 1
    assert "autocanary_tick_lateness_seconds_count" in text and "autocanary_abort_latency_seconds" in text
    evidence = [line for line in text.splitlines() if line.startswith("autocanary_evidence{")]
    assert len(evidence) == 1 and 'service="checkout"' in evidence[0] and float(evidence[0].rsplit(" ", 1)[1]) == 1
    assert any(line.startswith("autocanary_evidence_threshold{") for line in text.splitlines())
    assert "autocanary_no_worse_evidence{" not in text  # nothing compared yet


def test_metrics_show_the_evidence_that_the_canary_is_no_worse(api: TestClient, store: RolloutStore) -> None:
    rollout = store.get(create(api).json()["id"])
    assert rollout is not None
    store.save(rollout.with_evidence(0.4, 37.5), token=None, next_tick=None)
    lines = api.get("/metrics").text.splitlines()
    (evidence,) = [line for line in lines if line.startswith("autocanary_no_worse_evidence{")]
    (threshold,) = [line for line in lines if line.startswith("autocanary_no_worse_threshold{")]
    assert f'rollout="{rollout.id}"' in evidence and float(evidence.rsplit(" ", 1)[1]) == 37.5
    assert float(threshold.rsplit(" ", 1)[1]) == 100  # 1/beta of the default policy


def test_oversized_bodies_are_413(api: TestClient) -> None:
    response = create(api, labels={f"k{i}": "x" * 200 for i in range(30)})
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_a_chunked_body_over_the_limit_is_413_too(api: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"namespace": "shop", "service": "checkout", "labels": {"k": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}}'

    response = api.post("/v1/rollouts", content=chunks(), headers={**DEPLOY, "Content-Type": "application/json"})
    assert (response.status_code, response.json()["error"]) == (413, "payload_too_large")


def test_overflowing_durations_and_lone_surrogates_are_422_naming_the_field(
    api: TestClient, store: RolloutStore
) -> None:
    for raw, field in (
        ('{"step_min_duration": 1e308}', "policy_overrides.step_min_duration"),
        ('{"step_min_duration": Infinity}', "policy_overrides.step_min_duration"),
        ('{"interval": 1e400}', "policy_overrides.interval"),
        ('{"description": "\\ud800"}', "policy_overrides.description"),
        ('{"steps": [true]}', "policy_overrides.steps[0]"),
    ):
        body = '{"namespace": "shop", "service": "checkout", "policy_overrides": ' + raw + "}"
        response = api.post("/v1/rollouts", content=body, headers={**DEPLOY, "Content-Type": "application/json"})
        assert (response.status_code, response.json()["field"]) == (422, field), (raw, response.text)
    assert store.list_rollouts().rollouts == []


def test_an_event_id_beyond_the_stream_range_is_422_not_503(api: TestClient) -> None:
    rollout_id = create(api).json()["id"]
    response = api.get(f"/v1/rollouts/{rollout_id}/events", headers={**VIEW, "Last-Event-ID": "18446744073709551616-0"})
    assert (response.status_code, response.json()["field"]) == (422, "last_event_id")


def test_a_request_without_a_token_is_401_before_its_body_is_looked_at(api: TestClient) -> None:
    response = api.post("/v1/rollouts", content=b"{not json", headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()["error"]) == (401, "unauthorized")
    authenticated = api.post(
        "/v1/rollouts", content=b"{not json", headers={**DEPLOY, "Content-Type": "application/json"}
    )
    assert authenticated.status_code == 422


def test_a_mis_pasted_token_entry_does_not_print_the_secret() -> None:
    with pytest.raises(ValueError, match="token entry 2") as error:
        TokenBook.load("ci:deployer:ok-secret,pasted-raw-secret-value", None)
    assert "pasted-raw-secret-value" not in str(error.value)


def test_unknown_routes_and_methods_are_json(api: TestClient) -> None:
    assert api.get("/v2/nothing").json()["error"] == "not_found"
    assert api.delete("/v1/policies", headers=VIEW).json()["error"] == "method_not_allowed"


def test_an_unexpected_error_is_500_without_a_traceback(
    api: TestClient, store: RolloutStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(store, "list_rollouts", boom)
    quiet = TestClient(api.app, raise_server_exceptions=False)  # the 500 handler re-raises for the server log
    response = quiet.get("/v1/rollouts", headers=VIEW)
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal_error",
        "message": "internal error; the server log has the details",
        "field": None,
    }


def test_redis_down_is_503(api: TestClient, store: RolloutStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*_: Any, **__: Any) -> Any:
        raise redis_module.ConnectionError("connection refused")

    monkeypatch.setattr(store.redis, "hget", down)
    monkeypatch.setattr(store.redis, "pipeline", down)
    nobody = free_port()  # the async reads of `GET /v1/rollouts/{id}`: a port nothing listens on
    monkeypatch.setattr(store.reads, "_connect", lambda: redis_module.asyncio.Redis(port=nobody))
    monkeypatch.setattr(store.reads, "_clients", {})
    response = api.get("/v1/rollouts/abc", headers=VIEW)
    assert (response.status_code, response.json()["error"]) == (503, "unavailable")


def test_the_stream_sends_the_final_events_even_when_the_end_lands_during_a_wait(
    api: TestClient, store: RolloutStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    rollout_id = create(api).json()["id"]
    real_wait = FollowedLog.wait

    async def end_during_the_wait(log: FollowedLog, rollout: str, after: str, block_ms: int) -> list[LogEntry]:
        current = store.get(rollout)
        assert current is not None
        now = datetime.now(UTC)
        ended = LogEntry("aborted", "the end", now, "aborted")
        store.save(current.with_phase(Phase.ABORTED, now, "done"), token=None, next_tick=None, events=[ended])
        monkeypatch.setattr(FollowedLog, "wait", real_wait)
        return []  # the wait saw nothing: the save landed just after it

    monkeypatch.setattr(FollowedLog, "wait", end_during_the_wait)
    kinds = []
    with api.stream(
        "GET", f"/v1/rollouts/{rollout_id}/events", headers={**VIEW, "Accept": "text/event-stream"}
    ) as stream:
        kinds = [line.removeprefix("event: ") for line in stream.iter_lines() if line.startswith("event: ")]
    assert kinds == ["created", "aborted", "end"]


def test_a_rollout_cannot_make_a_worker_call_loopback_or_sign_with_any_variable(
    api: TestClient, store: RolloutStore
) -> None:
    hook = {"kind": "webhook", "url": "http://127.0.0.1:6391/", "secret_env": "AUTOCANARY_REDIS_URL"}
    signed = create(api, policy_overrides={"notifications": [hook]})
    assert (signed.status_code, signed.json()["field"]) == (422, "policy_overrides.notifications[0].secret_env")
    unsigned = create(api, policy_overrides={"notifications": [{"kind": "webhook", "url": "http://127.0.0.1:6391/"}]})
    assert (unsigned.status_code, unsigned.json()["field"]) == (422, "policy_overrides.notifications[0].url")
    assert "is not allowed" in unsigned.json()["message"]
    assert store.list_rollouts().rollouts == []  # nothing stored


def test_an_allowed_notification_host_is_accepted_once_it_resolves_to_public_addresses(
    store: RolloutStore, cluster: FakeCluster
) -> None:
    answers = {"hooks.example.com": ["93.184.215.14"], "rebind.example.com": ["192.168.1.10"]}
    deps = Dependencies(store, cluster.backends(), lambda *_: None, {}, resolve=lambda host: answers[host])
    app = create_app(ApiSettings(tokens=TOKENS, notify_allowed_hosts="*.example.com"), deps)
    with TestClient(app) as client:
        private = create(
            client, policy_overrides={"notifications": [{"kind": "slack", "url": "https://rebind.example.com/"}]}
        )
        assert (private.status_code, private.json()["field"]) == (422, "policy_overrides.notifications[0].url")
        assert "192.168.1.10, a private address" in private.json()["message"]
        public = create(
            client, policy_overrides={"notifications": [{"kind": "slack", "url": "https://hooks.example.com/"}]}
        )
        assert public.status_code == 201, public.text


def test_a_failing_readiness_check_logs_one_line_not_a_traceback(
    store: RolloutStore, cluster: FakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> bool:
        raise ValueError("Invalid value for `git_commit`, must not be `None`")

    app = create_app(
        ApiSettings(tokens=TOKENS), Dependencies(store, cluster.backends(), Queue(), {"kubernetes": broken})
    )
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 503
    (record,) = [r for r in caplog.records if "readiness check" in r.getMessage()]
    assert record.exc_info is None and "kubernetes failed: ValueError" in record.getMessage()


def test_metrics_can_require_a_viewer_token(store: RolloutStore, cluster: FakeCluster) -> None:
    app = create_app(
        ApiSettings(tokens=TOKENS, metrics_token_required=True), Dependencies(store, cluster.backends(), Queue(), {})
    )
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=VIEW).status_code == 200


def test_idempotency_keys_are_scoped_per_token(store: RolloutStore, cluster: FakeCluster) -> None:
    tokens = TOKENS + ",other:deployer:other-secret"
    app = create_app(ApiSettings(tokens=tokens), Dependencies(store, cluster.backends(), Queue(), {}))
    with TestClient(app) as client:
        first = create(client, headers={**DEPLOY, "Idempotency-Key": "run-1"})
        assert first.status_code == 201
        other = create(
            client, headers={"Authorization": "Bearer other-secret", "Idempotency-Key": "run-1"}, service="cart"
        )
        # Another pipeline's identical key neither finds, blocks nor reveals the first one's rollout.
        assert other.status_code == 201, other.text
        assert other.json()["id"] != first.json()["id"] and other.json()["service"] == "cart"


def test_the_host_header_is_never_echoed_into_a_redirect(api: TestClient) -> None:
    response = api.get("/v1/rollouts/", headers={**VIEW, "Host": "evil.example"}, follow_redirects=False)
    assert response.status_code == 404 and "location" not in response.headers


def test_a_test_can_swap_a_dependency_through_dependency_overrides(store: RolloutStore, cluster: FakeCluster) -> None:
    app = create_app(ApiSettings(tokens=TOKENS), Dependencies(store, cluster.backends(), Queue(), {}))
    down = Dependencies(store, cluster.backends(), Queue(), {"redis": lambda: False})
    app.dependency_overrides[get_deps] = lambda: down
    with TestClient(app) as client:
        answer = client.get("/readyz")
    assert (answer.status_code, answer.json()["checks"]) == (503, {"redis": False})


def test_a_polled_rollout_shows_every_save_and_every_log_entry_at_once(api: TestClient, store: RolloutStore) -> None:
    rollout_id = create(api).json()["id"]
    first = api.get(f"/v1/rollouts/{rollout_id}", headers=VIEW).json()
    assert (first["phase"], first["last_verdicts"]) == ("pending", [])
    current = store.get(rollout_id)
    assert current is not None
    now = datetime.now(UTC)
    started = current.with_phase(Phase.PROGRESSING, now, "started").model_copy(update={"step_started_at": now})
    store.save(started, token=None, next_tick=None)  # a save: the version moves
    shown = shown_once(api, rollout_id, lambda answer: answer["phase"] != "pending")
    assert (shown["phase"], shown["reason"]) == ("progressing", "started")
    verdict = LogEntry(
        "verdict", "errors: canary 0.1 % vs stable 0.2 %", now, "progressing", data={"outcome": "passed"}
    )
    store.append_events(rollout_id, [verdict])  # no save: only the newest log entry moves
    again = shown_once(api, rollout_id, lambda answer: bool(answer["last_verdicts"]))
    assert [v["sentence"] for v in again["last_verdicts"]] == [verdict.message]
    later = api.get(f"/v1/rollouts/{rollout_id}", headers=VIEW).json()
    assert later["time_in_step_seconds"] >= again["time_in_step_seconds"] > 0  # the clock, at each answer
    assert api.get("/v1/rollouts/nope", headers=VIEW).status_code == 404


def test_answers_are_checked_against_redis_while_changes_cannot_be_followed(
    api: TestClient, store: RolloutStore
) -> None:
    rollout_id = create(api).json()["id"]
    shown: ShownRollouts = api.app.state.shown  # type: ignore[attr-defined]
    wait_for(lambda: shown._listening, 5, "the API following the store's changes")
    assert api.get(f"/v1/rollouts/{rollout_id}", headers=VIEW).json()["phase"] == "pending"
    shown._listening = False  # as when the subscription broke (Redis restarted or failed over)
    current = store.get(rollout_id)
    assert current is not None
    store.save(current.with_phase(Phase.ABORTED, datetime.now(UTC), "done"), token=None, next_tick=None)
    assert api.get(f"/v1/rollouts/{rollout_id}", headers=VIEW).json()["phase"] == "aborted"  # at once

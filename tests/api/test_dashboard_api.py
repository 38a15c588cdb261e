"""The dashboard's server side: pages and assets under a strict CSP, sign-in sessions instead of
tokens in the browser, CSRF on what changes something, and the API routes the pages read."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from adapters.redis_store import RolloutStore
from api.app import create_app
from api.auth import Principal, Role
from api.deps import Dependencies
from api.middleware import CONTENT_SECURITY_POLICY
from api.settings import ApiSettings
from api.ui.session import COOKIE, SessionSigner
from tests.api.test_api import DEPLOY, OPERATE, VIEW, api, cluster, create, queue
from tests.fakes import FakeCluster

__all__ = ["api", "cluster", "queue"]  # the fixtures, shared with test_api


def sign_in(api: TestClient, token: str) -> str:
    """Signs the client in; returns the session's CSRF token."""
    response = api.post("/ui/session", json={"token": token})
    assert response.status_code == 200, response.text
    return str(response.json()["csrf"])


def test_every_page_is_the_shell_under_a_strict_content_security_policy(api: TestClient) -> None:
    for path in ("/ui", "/ui/rollouts/abc123", "/ui/policies"):
        page = api.get(path)
        assert page.status_code == 200 and '<script type="module" src="/ui/static/app.js">' in page.text
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY and "script-src 'self'" in CONTENT_SECURITY_POLICY
        assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    script = api.get("/ui/static/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in script.text and "localStorage" not in script.text
    missing = api.get("/ui/static/..%2F..%2Fsettings.py")
    assert missing.status_code == 404 and missing.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "content-security-policy" not in api.get("/healthz").headers


def test_sign_in_sets_a_strict_http_only_cookie_and_never_echoes_the_token(api: TestClient) -> None:
    response = api.post("/ui/session", json={"token": "op-secret"})
    assert response.status_code == 200
    assert {key: response.json()[key] for key in ("name", "role")} == {"name": "oncall", "role": "operator"}
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain HTTP here; over TLS the cookie is Secure
    # The page was served over TLS by an ingress; the API sees HTTP: still the same site.
    assert api.post("/ui/session", json={"token": "op-secret"}, headers={"Origin": "https://testserver"}).is_success
    assert "op-secret" not in cookie and "op-secret" not in response.text
    assert api.get("/ui/session").json()["name"] == "oncall"
    assert api.delete("/ui/session").status_code == 204
    api.cookies.clear()
    assert api.get("/ui/session").status_code == 401


def test_a_wrong_token_is_refused_and_sets_nothing(api: TestClient) -> None:
    response = api.post("/ui/session", json={"token": "not-a-token"})
    assert (response.status_code, response.json()["message"]) == (401, "invalid token")
    assert "set-cookie" not in response.headers
    assert api.post("/ui/session", json={}).status_code == 422


def test_a_session_reads_the_api_as_its_role(api: TestClient) -> None:
    rollout_id = create(api).json()["id"]
    sign_in(api, "view-secret")
    assert api.get("/v1/rollouts").status_code == 200
    assert api.get(f"/v1/rollouts/{rollout_id}").status_code == 200
    refused = api.post(f"/v1/rollouts/{rollout_id}/abort", json={"reason": "x"}, headers={"X-CSRF-Token": "nope"})
    assert refused.status_code == 403


def test_a_change_through_a_session_needs_its_csrf_token_and_this_origin(api: TestClient) -> None:
    rollout_id = create(api).json()["id"]
    csrf = sign_in(api, "op-secret")
    path = f"/v1/rollouts/{rollout_id}/pause"
    without = api.post(path, json={"reason": "look"})
    assert without.status_code == 403 and "X-CSRF-Token" in without.json()["message"]
    forged = api.post(path, json={"reason": "look"}, headers={"X-CSRF-Token": "0" * 64})
    assert forged.status_code == 403
    elsewhere = api.post(path, json={"reason": "x"}, headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"})
    assert elsewhere.status_code == 403
    accepted = api.post(path, json={"reason": "look"}, headers={"X-CSRF-Token": csrf})
    assert accepted.status_code == 202 and accepted.json()["actor"] == "oncall"
    assert (
        api.post("/ui/session", json={"token": "op-secret"}, headers={"Origin": "https://evil.example"}).status_code
        == 403
    )


def test_a_forged_expired_or_revoked_session_is_401(api: TestClient, store: RolloutStore) -> None:
    signer: SessionSigner = api.app.state.sessions  # type: ignore[attr-defined]
    api.cookies.set(COOKIE, "eyJuIjoib25jYWxsIiwiciI6Im9wZXJhdG9yIiwiZSI6OTk5OTk5OTk5OX0.forged")
    assert api.get("/v1/rollouts").status_code == 401
    api.cookies.set(COOKIE, signer.cookie(Principal("oncall", Role.OPERATOR), time.time() - 1))
    assert api.get("/v1/rollouts").status_code == 401
    api.cookies.set(COOKIE, signer.cookie(Principal("someone-else", Role.OPERATOR), time.time() + 60))
    assert api.get("/v1/rollouts").status_code == 401  # signed, but no such token any more
    api.cookies.set(COOKIE, signer.cookie(Principal("grafana", Role.OPERATOR), time.time() + 60))
    assert api.get("/v1/rollouts").status_code == 401  # the token exists with another role


def test_a_bearer_token_still_wins_over_a_cookie(api: TestClient) -> None:
    sign_in(api, "view-secret")
    assert create(api, headers=DEPLOY).status_code == 201
    assert api.get("/v1/rollouts", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_the_pages_read_the_resolved_policy_and_filter_by_target_kind(api: TestClient) -> None:
    rollout_id = create(api).json()["id"]
    shown = api.get(f"/v1/rollouts/{rollout_id}", headers=VIEW).json()
    assert shown["resolved_policy"]["steps"] == [5, 10, 25, 50]
    assert shown["resolved_policy"]["step_max_duration"] == "2m30s"
    listed = api.get("/v1/rollouts", headers=VIEW).json()["items"]
    assert listed[0]["resolved_policy"] is None  # only when one rollout is read
    assert [r["id"] for r in api.get("/v1/rollouts?kind=knative", headers=VIEW).json()["items"]] == [rollout_id]
    assert api.get("/v1/rollouts?kind=istio", headers=VIEW).json()["items"] == []
    bad = api.get("/v1/rollouts?kind=nginx", headers=OPERATE)
    assert (bad.status_code, bad.json()["field"]) == (422, "kind")


def test_the_cookie_can_be_marked_secure_behind_an_ingress_that_ends_tls(store: RolloutStore) -> None:
    app = create_app(
        ApiSettings(tokens="oncall:operator:op-secret", ui_secure_cookie=True),
        Dependencies(store, FakeCluster().backends(), lambda *_: None, {}),
    )
    with TestClient(app) as client:
        cookie = client.post("/ui/session", json={"token": "op-secret"}).headers["set-cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie

"""A small Python client of the HTTP API (httpx), used by the CLI and by pipelines."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from httpx_sse import connect_sse


class ClientError(Exception):
    """The server refused the request; `status` and the server's `{error, message, field}`."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        field = f" ({body['field']})" if body.get("field") else ""
        super().__init__(f"{status} {body.get('error', 'error')}: {body.get('message', '')}{field}")


class AutocanaryClient:
    def __init__(self, server: str, token: str, timeout: float = 15.0) -> None:
        self.http = httpx.Client(
            base_url=server.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    def create(
        self,
        namespace: str,
        service: str | None,
        *,
        canary: str | None = None,
        stable: str | None = None,
        policy: str = "default",
        overrides: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        target: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Register a rollout: a Knative Service by `namespace` and `service`, or any `target` object."""
        body: dict[str, Any] = {"policy": policy, "labels": labels or {}}
        if target is not None:
            body["target"] = target
        else:
            body.update(namespace=namespace, service=service)
        if canary:
            body["canary_revision"] = canary
        if stable:
            body["stable_revision"] = stable
        if overrides:
            body["policy_overrides"] = overrides
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        created: dict[str, Any] = self._json(self.http.post("/v1/rollouts", json=body, headers=headers))
        return created

    def get(self, rollout_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self._json(self.http.get(f"/v1/rollouts/{rollout_id}"))
        return found

    def list_rollouts(self, **filters: Any) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v is not None}
        page: dict[str, Any] = self._json(self.http.get("/v1/rollouts", params=params))
        return page

    def action(self, rollout_id: str, action: str, reason: str = "") -> dict[str, Any]:
        accepted: dict[str, Any] = self._json(
            self.http.post(f"/v1/rollouts/{rollout_id}/{action}", json={"reason": reason})
        )
        return accepted

    def policies(self) -> dict[str, dict[str, Any]]:
        """Every policy the server resolves names against: the built-ins and the installation's own."""
        found: dict[str, dict[str, Any]] = self._json(self.http.get("/v1/policies"))
        return found

    def policy(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self._json(self.http.get(f"/v1/policies/{name}"))
        return found

    def events(self, rollout_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._json(self.http.get(f"/v1/rollouts/{rollout_id}/events"))
        return found

    def stream(
        self, rollout_id: str, after: str | None = None, on_connect: Callable[[], None] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Server-Sent Events until the rollout ends (the last one has kind "end").

        `after`: the id of the last event already seen (`Last-Event-ID`), to resume a stream
        that broke off without seeing any event twice. `on_connect` is called once the server
        has accepted the stream, before any event arrives.
        """
        headers = {"Last-Event-ID": after} if after else {}
        url = f"/v1/rollouts/{rollout_id}/events"
        with connect_sse(self.http, "GET", url, headers=headers, timeout=None) as source:
            if source.response.status_code != 200:
                source.response.read()
                self._json(source.response)
            if on_connect is not None:
                on_connect()
            for event in source.iter_sse():
                if not event.data:  # a keep-alive comment: the spec dispatches nothing for it
                    continue
                if event.event == "end":
                    yield {"kind": "end"}
                    return
                yield {"kind": event.event, **json.loads(event.data)}

    def _json(self, answer: httpx.Response) -> Any:
        try:
            body = answer.json()
        except ValueError:
            body = {"error": "bad_response", "message": answer.text[:200]}
        if answer.status_code >= 400:
            raise ClientError(answer.status_code, body if isinstance(body, dict) else {"message": str(body)})
        return body

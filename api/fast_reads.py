"""`GET /v1/rollouts/{id}` answered in front of FastAPI's routing: the request dashboards repeat most.

With the answer already built (`api.shown`), what a poll cost was mostly the framework around it:
matching the route, solving its dependencies, the response class (py-spy at 1,750 polls a second:
about half of the API process's CPU). This middleware serves the common case itself, a token or
dashboard session allowed to view and a rollout that exists, with the bytes and headers the route
would send. Anything else goes on to the route, which answers it as it always has: no token or a
weak one, an unknown id, another method, a test that swapped a dependency
(`app.dependency_overrides`). An error while answering (Redis away) gets the route's error answer
(`api.errors.error_response`). The route stays the one the OpenAPI description documents.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import AuthError, Role
from api.deps import Dependencies, identify
from api.errors import HANDLED, error_response
from api.shown import ShownRollouts

PREFIX = "/v1/rollouts/"
LONGEST_ID = 64
"""Longer ids are never looked up (the route answers 404 without asking Redis either)."""


class RolloutReads:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"].startswith(PREFIX):
            try:
                answer = await self._answer(scope, scope["path"][len(PREFIX) :])
            except HANDLED as exc:
                await error_response(Request(scope), exc)(scope, receive, send)
                return
            if answer is not None:
                headers = [(b"content-length", b"%d" % len(answer)), (b"content-type", b"application/json")]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": answer})
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _answer(scope: Scope, rollout_id: str) -> bytes | None:
        """The answer, or None where the route must decide."""
        app: FastAPI = scope["app"]
        if not rollout_id or len(rollout_id) > LONGEST_ID or "/" in rollout_id or app.dependency_overrides:
            return None
        try:
            identify(Request(scope), Role.VIEWER)
        except AuthError:
            return None
        deps: Dependencies = app.state.deps
        shown: ShownRollouts = app.state.shown
        return await shown.answer(rollout_id, deps.clock())

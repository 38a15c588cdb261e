"""`/ui`: the web dashboard's page shell, its static assets and its sign-in session.

The pages are one HTML shell and one script that draws them from the API's own routes
(`/v1/rollouts`, their event streams, `/v1/policies`) with the browser's `fetch` (its streams
read the event stream) and SVG. Nothing is built: the files under `static/` are served as they are. Sign-in exchanges a
token for a session cookie (api/ui/session.py); the token is not kept anywhere in the browser.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Cookie, Request, Response
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from api.auth import AuthError, Principal, Role, TokenBook
from api.deps import Settings, same_origin
from api.settings import ApiSettings
from api.ui.session import COOKIE, SessionSigner

router = APIRouter(prefix="/ui", include_in_schema=False)

_STATIC = resources.files("api.ui").joinpath("static")
_ASSETS = {"app.js": "text/javascript", "app.css": "text/css", "chart.js": "text/javascript"}
"""The only files served from static/, by name: no path from a request ever reaches the disk."""


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: Annotated[str, Field(min_length=1, max_length=1024)]


class SessionPublic(BaseModel):
    name: str
    role: str
    csrf: str
    """Send it as `X-CSRF-Token` with every request that changes something."""
    expires: float


@router.get("", response_class=HTMLResponse)
@router.get("/rollouts/{rollout_id}", response_class=HTMLResponse)
@router.get("/policies", response_class=HTMLResponse)
def page() -> HTMLResponse:
    """Every page is the same shell; the script draws the one the path names."""
    html = _STATIC.joinpath("index.html").read_text(encoding="utf-8")
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.get("/static/{name}")
def asset(name: str) -> Response:
    media_type = _ASSETS.get(name)
    if media_type is None:
        return Response("not found", status_code=404, media_type="text/plain")
    with resources.as_file(_STATIC.joinpath(name)) as path:
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"})


@router.post("/session", response_model=SessionPublic)
def sign_in(body: SignIn, request: Request, response: Response, settings: Settings) -> SessionPublic:
    """Exchange a token for a session cookie (401 for a token the API does not know)."""
    if not same_origin(request):
        raise AuthError(403, "sign in from the dashboard's own page")
    tokens: TokenBook = request.app.state.tokens
    principal = tokens.authenticate(f"Bearer {body.token}", Role.VIEWER)
    expires = time.time() + settings.ui_session_hours * 3600
    signer: SessionSigner = request.app.state.sessions
    cookie = signer.cookie(principal, expires)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=int(settings.ui_session_hours * 3600),
        path="/",
        secure=_secure(request, settings),
        httponly=True,
        samesite="strict",
    )
    response.headers["Cache-Control"] = "no-store"
    return _public(principal, signer.csrf(cookie), expires)


@router.get("/session", response_model=SessionPublic)
def current_session(
    request: Request, response: Response, session_cookie: Annotated[str | None, Cookie(alias=COOKIE)] = None
) -> SessionPublic:
    """Who is signed in, and the CSRF token for this session (401 when nobody is)."""
    signer: SessionSigner = request.app.state.sessions
    tokens: TokenBook = request.app.state.tokens
    session = signer.session(session_cookie, time.time())
    if session_cookie is None or session is None or not tokens.holds(session.principal):
        raise AuthError(401, "not signed in")
    response.headers["Cache-Control"] = "no-store"
    return _public(session.principal, signer.csrf(session_cookie), session.expires)


@router.delete("/session", status_code=204)
def sign_out(request: Request, settings: Settings) -> Response:
    """Forget the session cookie."""
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/", secure=_secure(request, settings), httponly=True, samesite="strict")
    return response


def _secure(request: Request, settings: ApiSettings) -> bool:
    """The cookie is `Secure` over HTTPS, and behind an ingress that ends TLS when configured so."""
    return settings.ui_secure_cookie or request.url.scheme == "https"


def _public(principal: Principal, csrf: str, expires: float) -> SessionPublic:
    return SessionPublic(name=principal.name, role=principal.role.name.lower(), csrf=csrf, expires=expires)

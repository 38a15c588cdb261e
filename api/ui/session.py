"""Browser sessions for the dashboard, signed with a key derived from the installation's tokens.

A person signs in with the same token as the API's clients. The browser never keeps the token:
the API answers with a session cookie (`HttpOnly`, `SameSite=Strict`, `Secure` over TLS) that
holds the token's name, role and an expiry, signed with HMAC-SHA256. The signing key is derived
from every token the API knows, so every API process with the same tokens accepts the same
sessions without shared state, and rotating any token ends every session.

State-changing requests that a session authenticates need a second value, the CSRF token, sent
in the `X-CSRF-Token` header: it is derived from the cookie, and only a page of the same origin
can read it (from `GET /ui/session`). `SameSite=Strict` already keeps the cookie off cross-site
requests; the header holds even where a browser does not honour that.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass

from api.auth import Principal, Role

COOKIE = "autocanary_session"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class Session:
    principal: Principal
    expires: float
    """Unix seconds."""


class SessionSigner:
    """Makes and checks session cookies and their CSRF tokens."""

    def __init__(self, secrets: Iterable[str]) -> None:
        material = "\n".join(sorted(secrets)).encode()
        self._key = hmac.new(b"autocanary dashboard session v1", material, hashlib.sha256).digest()

    def cookie(self, principal: Principal, expires: float) -> str:
        payload = json.dumps({"n": principal.name, "r": principal.role.name.lower(), "e": int(expires)})
        encoded = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
        return f"{encoded}.{self._sign('session', encoded)}"

    def session(self, cookie: str | None, now: float) -> Session | None:
        """The session a cookie holds, or None when it is missing, forged, malformed or expired."""
        encoded, _, signature = (cookie or "").partition(".")
        if not encoded or not hmac.compare_digest(signature, self._sign("session", encoded)):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
            principal = Principal(str(payload["n"]), Role[str(payload["r"]).upper()])
            expires = float(payload["e"])
        except (ValueError, KeyError, TypeError):
            return None
        return Session(principal, expires) if expires > now else None

    def csrf(self, cookie: str) -> str:
        return self._sign("csrf", cookie)

    def csrf_matches(self, cookie: str, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented, self.csrf(cookie))

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

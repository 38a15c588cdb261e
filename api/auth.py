"""Bearer tokens with roles: viewer < deployer < operator.

Tokens come from `AUTOCANARY_TOKENS` (`name:role:secret,...`) and/or a file named by
`AUTOCANARY_TOKENS_FILE` (YAML or JSON list of `{name, role, token}`). Every presented token is
compared with every known one in constant time, so timing tells nothing about how close a guess
was. The token's name is the actor recorded for manual actions.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import yaml


class Role(IntEnum):
    VIEWER = 1
    """Reads rollouts, events and policies (dashboards)."""
    DEPLOYER = 2
    """Also registers rollouts (pipelines)."""
    OPERATOR = 3
    """Also aborts, pauses, resumes and promotes (on-call engineers)."""


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role


class AuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class TokenBook:
    def __init__(self, tokens: dict[str, Principal]) -> None:
        self._tokens = [(secret.encode(), principal) for secret, principal in tokens.items()]

    @classmethod
    def load(cls, inline: str, file: str | None) -> TokenBook:
        entries: list[tuple[str, str, str]] = []
        for item in filter(None, (part.strip() for part in inline.split(","))):
            name, role, secret = [*item.split(":", 2), "", ""][:3]
            entries.append((name, role, secret))
        if file:
            loaded = yaml.safe_load(Path(file).read_text(encoding="utf-8")) or []
            if not isinstance(loaded, list):
                raise ValueError(f"{file}: expected a list of {{name, role, token}}")
            entries += [(str(e.get("name", "")), str(e.get("role", "")), str(e.get("token", ""))) for e in loaded]
        tokens: dict[str, Principal] = {}
        for position, (name, role, secret) in enumerate(entries, start=1):
            if not name or not secret or role.upper() not in Role.__members__:
                # By position only: a mis-pasted entry may be a bare secret, which must not reach a log.
                raise ValueError(
                    f"token entry {position}: needs name:role:secret with a role of viewer, deployer or operator"
                )
            tokens[secret] = Principal(name, Role[role.upper()])
        return cls(tokens)

    def authenticate(self, authorization: str | None, needed: Role) -> Principal:
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            raise AuthError(401, "missing bearer token: send Authorization: Bearer <token>")
        found = None
        for secret, principal in self._tokens:  # no early exit: constant time over the book
            if hmac.compare_digest(secret, presented.encode()):
                found = principal
        if found is None:
            raise AuthError(401, "invalid token")
        return authorize(found, needed)

    @property
    def secrets(self) -> list[str]:
        """Every token, to derive the dashboard's session key from (api/ui/session.py)."""
        return [secret.decode() for secret, _ in self._tokens]

    def holds(self, principal: Principal) -> bool:
        """Whether a token of this name and role is still known (a session outlives no token)."""
        return any(known == principal for _, known in self._tokens)


def authorize(principal: Principal, needed: Role) -> Principal:
    """The principal, if its role is enough; 403 naming both roles otherwise."""
    if principal.role < needed:
        raise AuthError(
            403, f"token {principal.name!r} has role {principal.role.name.lower()}; this needs {needed.name.lower()}"
        )
    return principal

"""Settings of the API process, read from `AUTOCANARY_*` environment variables."""

from __future__ import annotations

from adapters.settings import SharedSettings


class ApiSettings(SharedSettings):
    """The API process: the shared connections (Prometheus only for `/readyz`), plus its own."""

    tokens: str = ""
    """Tokens as `name:role:secret` separated by commas (roles: viewer, deployer, operator)."""
    tokens_file: str | None = None
    """A YAML or JSON list of {name, role, token}; added to `tokens`."""
    max_body_bytes: int = 65_536
    """Request bodies larger than this are refused with 413."""
    sse_poll_ms: int = 1000
    """How often an event stream reads its log while the API cannot follow the store's
    announcements of changes (while it can, a stream reads when told, and every 15 s anyway)."""
    metrics_token_required: bool = False
    """Require a viewer token on /metrics (it names every active rollout's namespace, service and revision)."""
    ui_session_hours: float = 8.0
    """How long a dashboard sign-in lasts (the session cookie's lifetime)."""
    ui_secure_cookie: bool = False
    """Mark the session cookie `Secure` even when the API sees plain HTTP (TLS ended at an ingress);
    it is always marked when the request came over HTTPS."""
    policies_dir: str | None = None
    """A directory of the installation's own policies (`NAME.yaml`), e.g. a mounted ConfigMap."""

"""Generic webhooks: the transition as JSON, HMAC-SHA256-signed when the target names a secret."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from adapters.notifiers.http import HttpPoster
from policies import NotificationTarget
from rollouts.actions import Notify
from rollouts.model import Rollout

SIGNATURE_HEADER = "X-Autocanary-Signature"


def payload(rollout: Rollout, notify: Notify, at: datetime) -> dict[str, Any]:
    """The generic webhook body."""
    return {
        "event": notify.event.value,
        "message": notify.message,
        "at": at.isoformat(),
        "rollout": {
            "id": rollout.id,
            "namespace": rollout.namespace,
            "service": rollout.service,
            "stable_revision": rollout.stable_revision,
            "canary_revision": rollout.canary_revision,
            "phase": rollout.phase.value,
            "canary_weight": rollout.canary_weight,
            "reason": rollout.reason,
            "labels": rollout.labels,
        },
    }


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    def __init__(self, poster: HttpPoster, secrets: Mapping[str, str]) -> None:
        self.poster = poster
        self.secrets = secrets
        """Only `AUTOCANARY_NOTIFY_SECRET_*` variables (and the global webhook's secret), by name."""

    def deliver(self, target: NotificationTarget, rollout: Rollout, notify: Notify, at: datetime) -> bool:
        body = json.dumps(payload(rollout, notify, at), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "X-Autocanary-Event": notify.event.value}
        secret = self.secrets.get(target.secret_env or "")
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, body)
        return self.poster.post(target.url, body, headers, f"{notify.event.value} for {rollout.id}")

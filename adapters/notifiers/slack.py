"""Slack incoming webhooks: one line per transition, with an emoji for the ones that matter."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from adapters.notifiers.http import HttpPoster
from policies import NotificationTarget
from rollouts.actions import Notify
from rollouts.model import Rollout

_EMOJI = {
    "promoted": ":white_check_mark:",
    "rolled_back": ":rotating_light:",
    "aborted": ":octagonal_sign:",
    "failed": ":x:",
    "superseded": ":twisted_rightwards_arrows:",
}


def slack_message(rollout: Rollout, notify: Notify) -> dict[str, Any]:
    emoji = _EMOJI.get(notify.event.value, ":information_source:")
    title = notify.event.value.replace("_", " ")
    return {
        "text": f"{emoji} *{title}* {rollout.namespace}/{rollout.service} ({rollout.canary_revision}): {notify.message}"
    }


class SlackNotifier:
    def __init__(self, poster: HttpPoster) -> None:
        self.poster = poster

    def deliver(self, target: NotificationTarget, rollout: Rollout, notify: Notify, at: datetime) -> bool:
        body = json.dumps(slack_message(rollout, notify)).encode()
        headers = {"Content-Type": "application/json"}
        return self.poster.post(target.url, body, headers, f"{notify.event.value} for {rollout.id}")

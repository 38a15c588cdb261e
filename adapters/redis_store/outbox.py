"""The notification outbox: a Redis Stream read by a consumer group of relays.

| key | type | holds |
|---|---|---|
| `outbox` | stream | notifications, each with the rollout as the decision that made it saved it |

The save that records a decision queues its notifications in the same atomic write, so a notification exists
exactly when its decision was saved; a relay that dies before acknowledging leaves its notifications
to another after `reclaim_idle_ms`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import redis

from adapters.redis_store.base import StoreBase
from adapters.redis_store.base import transient as _transient
from rollouts.log import Notification
from rollouts.model import Rollout
from rollouts.records import QueuedNotification

OUTBOX_GROUP = "relays"


class Outbox(StoreBase):
    def outbox_read(
        self, consumer: str, count: int = 16, block_ms: int = 1000, reclaim_idle_ms: int = 30_000
    ) -> list[QueuedNotification]:
        """Notices for this relay: first those another relay took and left unacknowledged for
        `reclaim_idle_ms` (it died), then new ones, waiting up to `block_ms` for them."""
        stream = self._key("outbox")
        with _transient("read the outbox"):
            try:
                self.redis.xgroup_create(stream, OUTBOX_GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            _, claimed, _ = self.redis.xautoclaim(stream, OUTBOX_GROUP, consumer, reclaim_idle_ms, "0-0", count=count)
            entries = [(entry_id, fields) for entry_id, fields in claimed if fields]
            if not entries:
                answer = self.redis.xreadgroup(OUTBOX_GROUP, consumer, {stream: ">"}, count=count, block=block_ms)
                entries = [entry for _, stream_entries in answer or [] for entry in stream_entries]
            counts: dict[str, int] = {}
            if claimed:
                pending = self.redis.xpending_range(stream, OUTBOX_GROUP, "-", "+", count, consumer)
                counts = {item["message_id"]: int(item["times_delivered"]) for item in pending}
        return [_outbox_message(entry_id, fields["notice"], counts.get(entry_id, 1)) for entry_id, fields in entries]

    def outbox_ack(self, ids: Sequence[str]) -> None:
        """Delivered (or given up on after retries): drop them from the outbox for good."""
        if not ids:
            return
        stream = self._key("outbox")
        with _transient("acknowledge outbox entries"):
            pipe = self.redis.pipeline(transaction=True)
            pipe.xack(stream, OUTBOX_GROUP, *ids)
            pipe.xdel(stream, *ids)
            pipe.execute()

    def outbox_backlog(self) -> int:
        """Notices not yet acknowledged (queued or being delivered)."""
        with _transient("measure the outbox"):
            return int(self.redis.xlen(self._key("outbox")))


def notification_json(notification: Notification, rollout: Rollout) -> str:
    return json.dumps(
        {
            "event": notification.event,
            "message": notification.message,
            "at": notification.at.isoformat(),
            "rollout": rollout.model_dump(mode="json"),
        },
        separators=(",", ":"),
    )


def _outbox_message(entry_id: str, raw: str, deliveries: int) -> QueuedNotification:
    data = json.loads(raw)
    notification = Notification(data["event"], data["message"], datetime.fromisoformat(data["at"]))
    return QueuedNotification(entry_id, notification, Rollout.from_stored(data["rollout"]), deliveries)

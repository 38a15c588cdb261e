"""`RolloutStore`: the facade of the store, and the atomic writes that must stay together.

Creating a rollout (idempotency key, one active rollout per service, index, schedule, first log
entry) and saving one (version and fencing token checked, document, schedule, active index, log
entries, notifications and the applied mark of a command written together) are each one Lua script.
A save with a stale version or a stale token changes nothing and says which. The event log,
outbox, schedule, samples and leases are parts of their own (`RolloutStore` is all of them).

| key | type | holds |
|---|---|---|
| `r:{id}` | hash | `doc` (the rollout as JSON) and `version` (for compare-and-set) |
| `active:{namespace}/{service}` | string | the one active rollout of a service (`active:istio:...` for Istio) |
| `index` | sorted set | every rollout id, scored by creation time (listing, pagination) |
| `idem:{key}` | string | an idempotency key's body hash and rollout id (expires) |
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import redis

from adapters.redis_store.base import lua
from adapters.redis_store.base import transient as _transient
from adapters.redis_store.commands import CommandInbox
from adapters.redis_store.connection import RedisLocation
from adapters.redis_store.event_log import EventLog
from adapters.redis_store.leases import Leases
from adapters.redis_store.outbox import Outbox, notification_json
from adapters.redis_store.samples import Samples
from adapters.redis_store.schedule import Schedule
from rollouts.errors import ActiveRolloutExists, IdempotencyMismatch, ValidationError
from rollouts.log import LogEntry, Notification
from rollouts.model import TARGET_KIND, Rollout
from rollouts.phase import Phase
from rollouts.records import Page, SaveItem, SaveResult

IDEMPOTENCY_TTL_SECONDS = 24 * 3600

_CREATE = """
if KEYS[6] ~= '' then
  local existing = redis.call('GET', KEYS[6])
  if existing then return {'idempotent', existing} end
end
local active = redis.call('GET', KEYS[2])
if active then return {'active', active} end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'version', ARGV[3])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
redis.call('XADD', KEYS[5], '*', 'event', ARGV[6])
if KEYS[6] ~= '' then redis.call('SET', KEYS[6], ARGV[7], 'EX', ARGV[8]) end
return {'created', ARGV[1]}
"""

_SAVE = """
local version = redis.call('HGET', KEYS[1], 'version')
if not version then return 'missing' end
if version ~= ARGV[1] then return 'stale_version' end
if ARGV[2] ~= '' and (redis.call('GET', KEYS[2]) or '0') ~= ARGV[2] then return 'stale_token' end
if KEYS[7] ~= '' and redis.call('HGET', KEYS[7], 'applied') ~= '0' then return 'stale_command' end
if KEYS[7] ~= '' then redis.call('HSET', KEYS[7], 'applied', '1') end
redis.call('HSET', KEYS[1], 'doc', ARGV[3], 'version', ARGV[4])
if ARGV[6] == '1' then
  redis.call('ZREM', KEYS[3], ARGV[7])
  if redis.call('GET', KEYS[4]) == ARGV[7] then redis.call('DEL', KEYS[4]) end
elseif ARGV[5] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[7])
end
local events = tonumber(ARGV[8])
for i = 9, 8 + events do redis.call('XADD', KEYS[5], '*', 'event', ARGV[i]) end
for i = 10 + events, 9 + events + tonumber(ARGV[9 + events]) do
  redis.call('XADD', KEYS[6], '*', 'notice', ARGV[i])
end
return 'ok'
"""

_PRUNE = """
-- KEYS: doc, events, fence, index. ARGV: version read when the rollout was found ended, id.
-- Only the version that was judged ended and old is deleted: anything written since keeps it.
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[2])
return 1
"""


def body_hash(body: Mapping[str, Any]) -> str:
    """A stable digest of a request body, for idempotency keys."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class RolloutStore(EventLog, Outbox, Schedule, Samples, Leases):
    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "autocanary",
        *,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        location: RedisLocation | None = None,
    ) -> None:
        super().__init__(client, prefix, wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms)
        self.location = location
        self.commands = CommandInbox(client, prefix, wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms)

    @classmethod
    def at(cls, location: RedisLocation, prefix: str = "autocanary") -> RolloutStore:
        """The store on the Redis `location` names (one server, or the primary Sentinel names)."""
        return cls(
            location.client(),
            prefix,
            wait_replicas=location.wait_replicas,
            wait_timeout_ms=location.wait_timeout_ms,
            location=location,
        )

    @classmethod
    def from_url(cls, url: str, prefix: str = "autocanary") -> RolloutStore:
        return cls.at(RedisLocation(url), prefix)

    _create = lua(_CREATE)
    _save = lua(_SAVE)
    _prune = lua(_PRUNE)

    def _active_key(self, namespace: str, service: str, kind: str = TARGET_KIND) -> str:
        """One active rollout per routed object; other kinds than Knative's are named apart, so
        a VirtualService and a Knative Service of one name do not block each other."""
        return self._key("active", f"{namespace}/{service}" if kind == TARGET_KIND else f"{kind}:{namespace}/{service}")

    def create(
        self, rollout: Rollout, event: LogEntry, idempotency_key: str | None = None, request_hash: str = ""
    ) -> tuple[Rollout, bool]:
        """Store a new rollout; (the rollout, True), or (the earlier one, False) for a repeated key."""
        stored = rollout.model_copy(update={"version": 1})
        idem_key = self._key("idem", idempotency_key) if idempotency_key else ""
        with _transient("create the rollout"):
            pipe = self.redis.pipeline(transaction=False)
            self._create(
                keys=[
                    self._key("r", rollout.id),
                    self._active_key(rollout.namespace, rollout.service, rollout.target_kind),
                    self._key("index"),
                    self._key("due"),
                    self._key("ev", rollout.id),
                    idem_key,
                ],
                args=[
                    rollout.id,
                    stored.to_stored(),
                    1,
                    rollout.created_at.timestamp(),
                    rollout.created_at.timestamp(),
                    event.to_json(),
                    json.dumps({"hash": request_hash, "id": rollout.id}),
                    IDEMPOTENCY_TTL_SECONDS,
                ],
                client=pipe,
            )
            [(outcome, value)] = self._durably(pipe, "create the rollout")
        if outcome == "active":
            raise ActiveRolloutExists(rollout.namespace, rollout.service, value)
        if outcome == "idempotent":
            earlier = json.loads(value)
            if earlier["hash"] != request_hash:
                raise IdempotencyMismatch(idempotency_key or "", earlier["id"])
            found = self.get(earlier["id"])
            if found is None:
                raise IdempotencyMismatch(idempotency_key or "", earlier["id"])
            return found, False
        return stored, True

    def get(self, rollout_id: str) -> Rollout | None:
        return self.get_many([rollout_id])[0]

    def get_many(self, ids: Sequence[str]) -> list[Rollout | None]:
        """Pipelined: one round trip for the whole batch."""
        if not ids:
            return []
        with _transient("read rollouts"):
            pipe = self.redis.pipeline(transaction=False)
            for rollout_id in ids:
                pipe.hget(self._key("r", rollout_id), "doc")
            docs = pipe.execute()
        return [Rollout.from_stored(doc) if doc else None for doc in docs]

    def active_for(self, namespace: str, service: str, kind: str = TARGET_KIND) -> str | None:
        with _transient("read the active rollout"):
            value = self.redis.get(self._active_key(namespace, service, kind))
        return str(value) if value else None

    def list_rollouts(
        self,
        namespace: str | None = None,
        service: str | None = None,
        phase: Phase | None = None,
        limit: int = 50,
        cursor: str | None = None,
        kind: str | None = None,
    ) -> Page:
        """Newest first, filtered; `cursor` continues after the last rollout of the previous page."""
        found: list[Rollout] = []
        max_score, skip_through = _parse_cursor(cursor)
        chunk = max(limit * 4, 100)
        offset = 0
        with _transient("list rollouts"):
            while len(found) < limit:
                entries = self.redis.zrevrangebyscore(
                    self._key("index"), max_score, "-inf", start=offset, num=chunk, withscores=True
                )
                if not entries:
                    break
                offset += len(entries)
                ids = [rollout_id for rollout_id, _ in entries]
                if skip_through is not None:
                    if skip_through in ids:
                        ids = ids[ids.index(skip_through) + 1 :]
                        skip_through = None
                    else:
                        continue
                for rollout in self.get_many(ids):
                    if rollout is None or not _matches(rollout, namespace, service, phase, kind):
                        continue
                    found.append(rollout)
                    if len(found) == limit:
                        break
        last = found[-1] if len(found) == limit else None
        next_cursor = f"{last.created_at.timestamp()!r}:{last.id}" if last else None
        return Page(found, next_cursor)

    def prune_ended(self, finished_before: datetime, limit: int = 1000) -> int:
        """Delete up to `limit` rollouts that ended before `finished_before`, event logs included.

        Ended rollouts are otherwise kept forever, and Redis (and every /metrics scrape, which
        reads them all) would grow without bound. A rollout ends after it was created, so only
        the part of the index created before the cutoff is read, oldest first. Returns how many
        were deleted.
        """
        cutoff = finished_before.timestamp()
        deleted, offset, chunk = 0, 0, 200
        with _transient("prune ended rollouts"):
            while deleted < limit:
                ids = self.redis.zrangebyscore(self._key("index"), "-inf", cutoff, start=offset, num=chunk)
                if not ids:
                    break
                kept = 0
                for rollout_id, rollout in zip(ids, self.get_many(ids), strict=True):
                    if rollout is None or not _ended_before(rollout, cutoff):
                        kept += 1  # active, or ended too recently: stays in the index
                        continue
                    keys = [self._key(kind, rollout_id) for kind in ("r", "ev", "fence")] + [self._key("index")]
                    if self._prune(keys=keys, args=[rollout.version, rollout_id]):
                        deleted += 1
                    else:
                        kept += 1
                    if deleted == limit:
                        break
                offset += kept  # deleted entries left the index, so the next chunk starts after the kept
        return deleted

    # --- save ----------------------------------------------------------------------------------

    def save(
        self,
        rollout: Rollout,
        *,
        token: int | None,
        next_tick: datetime | None,
        events: Sequence[LogEntry] = (),
        notifications: Sequence[Notification] = (),
        command: str = "",
    ) -> tuple[SaveResult, Rollout]:
        """Compare-and-set on `rollout.version`, and on `token` unless it is None.

        `next_tick` None keeps the rollout's place in the schedule; a terminal rollout leaves it.
        `events` go to the rollout's log and `notifications` to the outbox, in the same atomic write:
        a notification exists exactly when its decision was saved.
        """
        return self.save_many([SaveItem(rollout, token, next_tick, events, notifications, command)])[0]

    def save_many(self, items: Sequence[SaveItem]) -> list[tuple[SaveResult, Rollout]]:
        """Pipelined compare-and-set of several rollouts; each succeeds or fails on its own."""
        prepared = []
        with _transient("save rollouts"):
            pipe = self.redis.pipeline(transaction=False)
            for rollout, token, next_tick, events, notifications, command in items:
                saved = rollout.model_copy(update={"version": rollout.version + 1})
                prepared.append(saved)
                self._save(
                    keys=[
                        self._key("r", rollout.id),
                        self._key("fence", rollout.id),
                        self._key("due"),
                        self._active_key(rollout.namespace, rollout.service, rollout.target_kind),
                        self._key("ev", rollout.id),
                        self._key("outbox"),
                        self.commands.key(command) if command else "",
                    ],
                    args=[
                        rollout.version,
                        "" if token is None else token,
                        saved.to_stored(),
                        saved.version,
                        "" if next_tick is None else next_tick.timestamp(),
                        "1" if saved.is_terminal else "0",
                        rollout.id,
                        len(events),
                        *(event.to_json() for event in events),
                        len(notifications),
                        *(notification_json(notification, saved) for notification in notifications),
                    ],
                    client=pipe,
                )
            results = self._durably(pipe, "save rollouts")
        return [(SaveResult(result), saved) for result, saved in zip(results, prepared, strict=True)]

    def ping(self) -> bool:
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    def memory_used(self) -> int:
        with _transient("read memory"):
            return int(self.redis.info("memory")["used_memory"])


def _parse_cursor(cursor: str | None) -> tuple[str, str | None]:
    """(highest score to read, id to skip through) from a cursor of `list_rollouts`."""
    if not cursor:
        return "+inf", None
    score, _, skip_through = cursor.partition(":")
    try:
        value = float(score)
    except ValueError:
        value = math.nan
    if not skip_through or not math.isfinite(value):
        raise ValidationError.single("cursor", "not a cursor from a previous page")
    return repr(value), skip_through


def _matches(
    rollout: Rollout, namespace: str | None, service: str | None, phase: Phase | None, kind: str | None
) -> bool:
    return (
        (not namespace or rollout.namespace == namespace)
        and (not service or rollout.service == service)
        and (phase is None or rollout.phase is phase)
        and (not kind or rollout.target_kind == kind)
    )


def _ended_before(rollout: Rollout, cutoff: float) -> bool:
    return rollout.is_terminal and rollout.finished_at is not None and rollout.finished_at.timestamp() < cutoff

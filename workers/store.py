"""`RolloutStore`: rollouts, their event logs and their schedule in Redis, safe under concurrency.

Keys (all under a prefix, `autocanary` by default):

| key | type | holds |
|---|---|---|
| `r:{id}` | hash | `doc` (the rollout as JSON) and `version` (for compare-and-set) |
| `active:{namespace}/{service}` | string | the id of the service's one active rollout |
| `index` | sorted set | every rollout id, scored by creation time (listing, pagination) |
| `due` | sorted set | active rollout ids, scored by when they next need a tick |
| `ev:{id}` | stream | the append-only event log: who, what, when, why, each verdict's numbers |
| `fence:{id}` | string | the newest fencing token issued for the rollout |
| `lease:{id}` | string | the worker holding the rollout now (expires by itself) |
| `idem:{key}` | string | an idempotency key's body hash and rollout id (expires) |

Every write that must be atomic is one Lua script: creating a rollout (idempotency key, one
active rollout per service, index, schedule, first event) and saving one (version and fencing
token checked, document, schedule, active index and events written together). A save with a
stale version or a stale token changes nothing and says which. Redis errors become
`TransientError`s.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

import redis

from rollouts.errors import AutocanaryError, ValidationError
from rollouts.log import LogEntry, Notice
from rollouts.model import Rollout
from rollouts.phase import Phase
from workers.commands import CommandInbox
from workers.redis_errors import transient as _transient

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

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return redis.call('INCR', KEYS[2]) end
return 0
"""

_PREEMPT = """
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return token
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_PRUNE = """
-- KEYS: doc, events, fence, index. ARGV: version read when the rollout was found ended, id.
-- Only the version that was judged ended and old is deleted: anything written since keeps it.
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[2])
return 1
"""

_LEAD = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
"""

_CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #due, 2 do redis.call('ZADD', KEYS[1], 'XX', ARGV[3], due[i]) end
return due
"""


class SaveResult(StrEnum):
    OK = "ok"
    STALE_VERSION = "stale_version"
    """Someone saved a newer version first: reload before deciding again."""
    STALE_TOKEN = "stale_token"  # noqa: S105 (a result, not a password)
    """Someone took the rollout over (a newer lease or an abort): drop this result."""
    STALE_COMMAND = "stale_command"
    """The command this decision carries out was applied by another worker already (or is gone)."""
    MISSING = "missing"


class ActiveRolloutExists(AutocanaryError):
    """The service already has an active rollout."""

    def __init__(self, namespace: str, service: str, rollout_id: str) -> None:
        self.rollout_id = rollout_id
        super().__init__(f"{namespace}/{service} already has an active rollout: {rollout_id}")


class IdempotencyMismatch(AutocanaryError):
    """The idempotency key was used before with a different request body."""

    def __init__(self, key: str, rollout_id: str) -> None:
        self.rollout_id = rollout_id
        super().__init__(f"idempotency key {key!r} was used for another request (rollout {rollout_id})")


@dataclass(frozen=True)
class OutboxMessage:
    """A notice read back from the outbox, with the rollout as it was saved by that decision."""

    id: str
    notice: Notice
    rollout: Rollout
    deliveries: int = 1
    """How often it has been handed out (above 1: a relay died or timed out before acknowledging it)."""


OUTBOX_GROUP = "relays"


class SaveItem(NamedTuple):
    """One rollout to compare-and-set, with what to record alongside it."""

    rollout: Rollout
    token: int | None
    next_tick: datetime | None
    events: Sequence[LogEntry] = ()
    notices: Sequence[Notice] = ()
    command: str = ""
    """The id of the manual command this decision applies: marked applied in the same atomic write."""


@dataclass(frozen=True)
class Page:
    rollouts: list[Rollout]
    next_cursor: str | None


def body_hash(body: Mapping[str, Any]) -> str:
    """A stable digest of a request body, for idempotency keys."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class RolloutStore:
    def __init__(self, client: redis.Redis, prefix: str = "autocanary") -> None:
        # redis-py's type hints do not follow decode_responses=True (every answer is str here).
        self.redis: Any = client
        self.prefix = prefix
        self._create = client.register_script(_CREATE)
        self._save = client.register_script(_SAVE)
        self._acquire = client.register_script(_ACQUIRE)
        self._preempt = client.register_script(_PREEMPT)
        self._release = client.register_script(_RELEASE)
        self._claim_due = client.register_script(_CLAIM_DUE)
        self._lead = client.register_script(_LEAD)
        self._prune = client.register_script(_PRUNE)
        self.commands = CommandInbox(client, prefix)

    @classmethod
    def from_url(cls, url: str, prefix: str = "autocanary") -> RolloutStore:
        client = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
        )
        return cls(client, prefix)

    # --- keys ----------------------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _active_key(self, namespace: str, service: str) -> str:
        return self._key("active", f"{namespace}/{service}")

    # --- create and read -----------------------------------------------------------------------

    def create(
        self, rollout: Rollout, event: LogEntry, idempotency_key: str | None = None, request_hash: str = ""
    ) -> tuple[Rollout, bool]:
        """Store a new rollout; (the rollout, True), or (the earlier one, False) for a repeated key."""
        stored = rollout.model_copy(update={"version": 1})
        idem_key = self._key("idem", idempotency_key) if idempotency_key else ""
        with _transient("create the rollout"):
            outcome, value = self._create(
                keys=[
                    self._key("r", rollout.id),
                    self._active_key(rollout.namespace, rollout.service),
                    self._key("index"),
                    self._key("due"),
                    self._key("ev", rollout.id),
                    idem_key,
                ],
                args=[
                    rollout.id,
                    stored.model_dump_json(),
                    1,
                    rollout.created_at.timestamp(),
                    rollout.created_at.timestamp(),
                    event.to_json(),
                    json.dumps({"hash": request_hash, "id": rollout.id}),
                    IDEMPOTENCY_TTL_SECONDS,
                ],
            )
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
        return [Rollout.model_validate_json(doc) if doc else None for doc in docs]

    def active_for(self, namespace: str, service: str) -> str | None:
        with _transient("read the active rollout"):
            value = self.redis.get(self._active_key(namespace, service))
        return str(value) if value else None

    def list_rollouts(
        self,
        namespace: str | None = None,
        service: str | None = None,
        phase: Phase | None = None,
        limit: int = 50,
        cursor: str | None = None,
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
                    if rollout is None or not _matches(rollout, namespace, service, phase):
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
        notices: Sequence[Notice] = (),
        command: str = "",
    ) -> tuple[SaveResult, Rollout]:
        """Compare-and-set on `rollout.version`, and on `token` unless it is None.

        `next_tick` None keeps the rollout's place in the schedule; a terminal rollout leaves it.
        `events` go to the rollout's log and `notices` to the outbox, in the same atomic write:
        a notice exists exactly when its decision was saved.
        """
        return self.save_many([SaveItem(rollout, token, next_tick, events, notices, command)])[0]

    def save_many(self, items: Sequence[SaveItem]) -> list[tuple[SaveResult, Rollout]]:
        """Pipelined compare-and-set of several rollouts; each succeeds or fails on its own."""
        prepared = []
        with _transient("save rollouts"):
            pipe = self.redis.pipeline(transaction=False)
            for rollout, token, next_tick, events, notices, command in items:
                saved = rollout.model_copy(
                    update={"version": rollout.version + 1, "fencing_token": token or rollout.fencing_token}
                )
                prepared.append(saved)
                self._save(
                    keys=[
                        self._key("r", rollout.id),
                        self._key("fence", rollout.id),
                        self._key("due"),
                        self._active_key(rollout.namespace, rollout.service),
                        self._key("ev", rollout.id),
                        self._key("outbox"),
                        self.commands.key(command) if command else "",
                    ],
                    args=[
                        rollout.version,
                        "" if token is None else token,
                        saved.model_dump_json(),
                        saved.version,
                        "" if next_tick is None else next_tick.timestamp(),
                        "1" if saved.is_terminal else "0",
                        rollout.id,
                        len(events),
                        *(event.to_json() for event in events),
                        len(notices),
                        *(_notice_json(notice, saved) for notice in notices),
                    ],
                    client=pipe,
                )
            results = pipe.execute()
        return [(SaveResult(result), saved) for result, saved in zip(results, prepared, strict=True)]

    # --- the notification outbox (a Redis Stream read by a consumer group) ------------------------

    def outbox_read(
        self, consumer: str, count: int = 16, block_ms: int = 1000, reclaim_idle_ms: int = 30_000
    ) -> list[OutboxMessage]:
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

    def append_events(self, rollout_id: str, events: Sequence[LogEntry]) -> None:
        with _transient("append events"):
            pipe = self.redis.pipeline(transaction=False)
            for event in events:
                pipe.xadd(self._key("ev", rollout_id), {"event": event.to_json()})
            pipe.execute()

    # --- events --------------------------------------------------------------------------------

    def events(self, rollout_id: str, after: str = "-", count: int = 1000) -> list[LogEntry]:
        start = "-" if after in ("-", "0", "0-0") else f"({after}"
        with _transient("read events"):
            entries = self.redis.xrange(self._key("ev", rollout_id), start, "+", count=count)
        return [LogEntry.from_stream(entry_id, fields["event"]) for entry_id, fields in entries]

    def recent_events(self, rollout_id: str, count: int) -> list[LogEntry]:
        """The newest `count` events, newest first."""
        with _transient("read events"):
            entries = self.redis.xrevrange(self._key("ev", rollout_id), count=count)
        return [LogEntry.from_stream(entry_id, fields["event"]) for entry_id, fields in entries]

    def wait_events(self, rollout_id: str, after: str, block_ms: int) -> list[LogEntry]:
        """Events after `after`, waiting up to `block_ms` for the first one (for live streams)."""
        with _transient("wait for events"):
            answer = self.redis.xread({self._key("ev", rollout_id): after}, block=block_ms, count=100)
        return [
            LogEntry.from_stream(entry_id, fields["event"])
            for _, entries in answer or []
            for entry_id, fields in entries
        ]

    # --- scheduling and leases -----------------------------------------------------------------

    def schedule(self, rollout_id: str, at: datetime) -> None:
        with _transient("schedule a tick"):
            self.redis.zadd(self._key("due"), {rollout_id: at.timestamp()}, xx=True)

    def claim_due(self, now: datetime, limit: int, claim_until: datetime) -> list[tuple[str, float]]:
        """Due (id, due time) pairs, pushed to `claim_until` so the next scheduler round skips them.

        If the tick they are sent to never happens (a worker killed, a message lost), they are
        due again at `claim_until` and sent again: nothing is lost.
        """
        with _transient("claim due rollouts"):
            flat = self._claim_due(keys=[self._key("due")], args=[now.timestamp(), limit, claim_until.timestamp()])
        return [(str(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]

    def record_samples(self, name: str, values: Sequence[float]) -> None:
        """Keep the latest measurements of `name` (tick lateness, abort latency) for /metrics and benchmarks."""
        if not values:
            return
        with _transient(f"record {name}"):
            pipe = self.redis.pipeline(transaction=False)
            for value in values:
                pipe.xadd(self._key("stats", name), {"v": f"{value:.6f}"}, maxlen=20_000, approximate=True)
            pipe.execute()

    def samples(self, name: str, count: int = 20_000) -> list[float]:
        with _transient(f"read {name}"):
            entries = self.redis.xrevrange(self._key("stats", name), count=count)
        return [float(fields["v"]) for _, fields in entries]

    def lead(self, role: str, owner: str, ttl_ms: int) -> bool:
        """Take or keep the lease that makes `owner` the one active `role` (e.g. the scheduler)."""
        with _transient(f"elect the {role}"):
            return bool(self._lead(keys=[self._key("leader", role)], args=[owner, ttl_ms]))

    def acquire_leases(self, ids: Sequence[str], owner: str, ttl_ms: int) -> dict[str, int]:
        """Leases on every free rollout among `ids`: {id: fencing token}; held ones are left out."""
        with _transient("take leases"):
            pipe = self.redis.pipeline(transaction=False)
            for rollout_id in ids:
                self._acquire(
                    keys=[self._key("lease", rollout_id), self._key("fence", rollout_id)],
                    args=[owner, ttl_ms],
                    client=pipe,
                )
            tokens = pipe.execute()
        return {rollout_id: int(token) for rollout_id, token in zip(ids, tokens, strict=True) if int(token)}

    def preempt(self, rollout_id: str, owner: str, ttl_ms: int) -> int:
        """Take a rollout over whoever holds it (for aborts): a new token that fences the old one out."""
        with _transient("preempt the rollout"):
            token = self._preempt(
                keys=[self._key("lease", rollout_id), self._key("fence", rollout_id)], args=[owner, ttl_ms]
            )
        return int(token)

    def release_leases(self, ids: Sequence[str], owner: str) -> None:
        with _transient("release leases"):
            pipe = self.redis.pipeline(transaction=False)
            for rollout_id in ids:
                self._release(keys=[self._key("lease", rollout_id)], args=[owner], client=pipe)
            pipe.execute()

    def holds_token(self, rollout_id: str, token: int) -> bool:
        """True while `token` is still the newest issued for the rollout (the fencing check)."""
        with _transient("check the fencing token"):
            return bool(self.redis.get(self._key("fence", rollout_id)) == str(token))

    def ping(self) -> bool:
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    def memory_used(self) -> int:
        with _transient("read memory"):
            return int(self.redis.info("memory")["used_memory"])


def _notice_json(notice: Notice, rollout: Rollout) -> str:
    return json.dumps(
        {
            "event": notice.event,
            "message": notice.message,
            "at": notice.at.isoformat(),
            "rollout": rollout.model_dump(mode="json"),
        },
        separators=(",", ":"),
    )


def _outbox_message(entry_id: str, raw: str, deliveries: int) -> OutboxMessage:
    data = json.loads(raw)
    notice = Notice(data["event"], data["message"], datetime.fromisoformat(data["at"]))
    return OutboxMessage(entry_id, notice, Rollout.model_validate(data["rollout"]), deliveries)


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


def _matches(rollout: Rollout, namespace: str | None, service: str | None, phase: Phase | None) -> bool:
    return (
        (not namespace or rollout.namespace == namespace)
        and (not service or rollout.service == service)
        and (phase is None or rollout.phase is phase)
    )


def _ended_before(rollout: Rollout, cutoff: float) -> bool:
    return rollout.is_terminal and rollout.finished_at is not None and rollout.finished_at.timestamp() < cutoff

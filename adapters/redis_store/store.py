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
| `index:ns:{namespace}` | sorted set | the same, of one namespace (filtered lists read only theirs) |
| `index:svc:{service}` | sorted set | the same, of one service name |
| `index:phase:{phase}` | sorted set | the same, of one phase (a save that changes it moves the entry) |
| `index:kind:{kind}` | sorted set | the same, of one target kind |
| `gauges` | hash | per active rollout, what `/metrics` shows of it (`gauges_json`), kept by every save |
| `counts:checks` | hash | ticks by verdict outcome, totals kept by every save (pruning keeps them) |
| `changed` | channel | each rollout created, saved, deleted or given a log entry, by id (the API follows it) |
| `indexes` | string | the version of the above once derived for rollouts stored before them |
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
from adapters.redis_store.reads import AsyncReads
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
for i = 7, 10 do redis.call('ZADD', KEYS[i], ARGV[4], ARGV[1]) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[11], ARGV[1], ARGV[9]) end
redis.call('PUBLISH', ARGV[10], ARGV[1])
return {'created', ARGV[1]}
"""

_SAVE = """
local version, previous_doc = unpack(redis.call('HMGET', KEYS[1], 'version', 'doc'))
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
-- The phase index and the check totals follow the change from the document replaced.
local previous = cjson.decode(previous_doc)
if previous.phase ~= ARGV[9] then
  redis.call('ZREM', ARGV[10] .. previous.phase, ARGV[7])
  local created = redis.call('ZSCORE', KEYS[9], ARGV[7])
  if created then redis.call('ZADD', KEYS[8], created, ARGV[7]) end
end
if ARGV[8] == '' then redis.call('HDEL', KEYS[10], ARGV[7]) else redis.call('HSET', KEYS[10], ARGV[7], ARGV[8]) end
local before = previous.checks or {}
for i, outcome in ipairs({'passed', 'failed', 'inconclusive', 'errored'}) do
  local delta = tonumber(ARGV[10 + i]) - (tonumber(before[outcome]) or 0)
  if delta ~= 0 then redis.call('HINCRBY', KEYS[11], outcome, delta) end
end
local events = tonumber(ARGV[15])
for i = 16, 15 + events do redis.call('XADD', KEYS[5], '*', 'event', ARGV[i]) end
for i = 17 + events, 16 + events + tonumber(ARGV[16 + events]) do
  redis.call('XADD', KEYS[6], '*', 'notice', ARGV[i])
end
redis.call('PUBLISH', KEYS[12], ARGV[7])
return 'ok'
"""

_PRUNE = """
-- KEYS: doc, events, fence, then the indexes. ARGV: version read when the rollout was found ended, id.
-- Only the version that was judged ended and old is deleted: anything written since keeps it.
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
for i = 4, #KEYS do redis.call('ZREM', KEYS[i], ARGV[2]) end
redis.call('PUBLISH', ARGV[3], ARGV[2])
return 1
"""

INDEXES_VERSION = "1"
"""Bumped when what `ensure_indexes` derives from the documents changes (the filter indexes, the
`/metrics` gauges and the check totals); it then derives them again."""


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
        self.reads = AsyncReads(self.async_client, prefix)
        self._indexes_built = False
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

    def _filter_indexes(self, rollout: Rollout) -> list[str]:
        """The indexes a rollout is listed in besides `index` (its phase's changes with each save)."""
        return [
            self._key("index", "ns", rollout.namespace),
            self._key("index", "svc", rollout.service),
            self._key("index", "phase", rollout.phase.value),
            self._key("index", "kind", rollout.target_kind),
        ]

    def ensure_indexes(self) -> int:
        """Build the filter indexes of rollouts stored before they existed; once per store (a
        marker says so), and safe to run twice at once: listing re-checks every filter on the
        document, so an index entry a racing save made stale is only skipped. How many were indexed."""
        with _transient("build the list indexes"):
            if self.redis.get(self._key("indexes")) == INDEXES_VERSION:
                return 0
            indexed, start = 0, 0
            totals = dict.fromkeys(CHECK_OUTCOMES, 0)
            while True:
                entries = self.redis.zrange(self._key("index"), start, start + 499, withscores=True)
                if not entries:
                    break
                start += len(entries)
                pipe = self.redis.pipeline(transaction=False)
                for (rollout_id, created), rollout in zip(entries, self.get_many([i for i, _ in entries]), strict=True):
                    if rollout is not None:
                        for index in self._filter_indexes(rollout):
                            pipe.zadd(index, {rollout_id: created})
                        if not rollout.is_terminal:
                            pipe.hset(self._key("gauges"), rollout_id, gauges_json(rollout))
                        checks = rollout.checks.model_dump()
                        for outcome in CHECK_OUTCOMES:
                            totals[outcome] += int(checks[outcome])
                        indexed += 1
                pipe.execute()
            # The totals of the rollouts read (saves racing this count twice at worst, once).
            self.redis.hset(self._key("counts", "checks"), mapping=totals)
            self.redis.set(self._key("indexes"), INDEXES_VERSION)
        return indexed

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
                    *self._filter_indexes(rollout),
                    self._key("gauges"),
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
                    gauges_json(stored),
                    self.changes_channel,
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
        return [Rollout.from_stored(doc) if doc else None for doc in self._documents(ids)]

    def _documents(self, ids: Sequence[str]) -> list[str | None]:
        """The stored documents of `ids`, unparsed (parsing is most of a read's cost)."""
        if not ids:
            return []
        with _transient("read rollouts"):
            pipe = self.redis.pipeline(transaction=False)
            for rollout_id in ids:
                pipe.hget(self._key("r", rollout_id), "doc")
            docs: list[str | None] = pipe.execute()
        return docs

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
        self._derived_ready()
        index = self._list_index(namespace, service, phase, kind)
        filters = sum(1 for value in (namespace, service, phase, kind) if value)
        # With one filter or none, the index holds only matches: a page reads no more than it shows.
        chunk = limit + 1 if filters <= 1 else max(limit * 4, 100)
        offset = 0
        with _transient("list rollouts"):
            while len(found) < limit:
                entries = self.redis.zrevrangebyscore(
                    index, max_score, "-inf", start=offset, num=chunk, withscores=True
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
                for doc in self._documents(ids):  # parsed one by one: a full page stops parsing
                    rollout = Rollout.from_stored(doc) if doc else None
                    if rollout is None or not _matches(rollout, namespace, service, phase, kind):
                        continue
                    found.append(rollout)
                    if len(found) == limit:
                        break
        last = found[-1] if len(found) == limit else None
        next_cursor = f"{last.created_at.timestamp()!r}:{last.id}" if last else None
        return Page(found, next_cursor)

    def _derived_ready(self) -> None:
        """Rollouts stored by an older release get their indexes, gauges and totals first."""
        if not self._indexes_built:
            self.ensure_indexes()
            self._indexes_built = True

    def metric_values(self) -> tuple[dict[str, int], dict[str, list[Any]], dict[str, int]]:
        """What `/metrics` shows, read whole in one round trip whatever the number stored: rollouts
        by phase (the phase indexes' sizes), each active rollout's gauges, and ticks by outcome."""
        self._derived_ready()
        with _transient("read the metrics"):
            pipe = self.redis.pipeline(transaction=False)
            for phase in Phase:
                pipe.zcard(self._key("index", "phase", phase.value))
            pipe.hgetall(self._key("gauges"))
            pipe.hgetall(self._key("counts", "checks"))
            *sizes, gauges, checks = pipe.execute()
        phases = {phase.value: int(size) for phase, size in zip(Phase, sizes, strict=True)}
        totals = {outcome: int(checks.get(outcome, 0)) for outcome in CHECK_OUTCOMES}
        # One parse of all of them: at 10,000 active, 10,000 json.loads calls were a quarter of a scrape.
        parsed = json.loads("[" + ",".join(gauges.values()) + "]")
        return phases, dict(zip(gauges, parsed, strict=True)), totals

    def _list_index(self, namespace: str | None, service: str | None, phase: Phase | None, kind: str | None) -> str:
        """The narrowest index a filter has; the other filters are checked on each document read."""
        for part, value in (("svc", service), ("ns", namespace), ("phase", phase and phase.value), ("kind", kind)):
            if value:
                return self._key("index", part, value)
        return self._key("index")

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
                    keys = [self._key(kind, rollout_id) for kind in ("r", "ev", "fence")]
                    keys += [self._key("index"), *self._filter_indexes(rollout)]
                    if self._prune(keys=keys, args=[rollout.version, rollout_id, self.changes_channel]):
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
                        self._key("index", "phase", saved.phase.value),
                        self._key("index"),
                        self._key("gauges"),
                        self._key("counts", "checks"),
                        self.changes_channel,  # a channel, not a key: PUBLISH takes its name
                    ],
                    args=[
                        rollout.version,
                        "" if token is None else token,
                        saved.to_stored(),
                        saved.version,
                        "" if next_tick is None else next_tick.timestamp(),
                        "1" if saved.is_terminal else "0",
                        rollout.id,
                        gauges_json(saved),
                        saved.phase.value,
                        self._key("index", "phase", ""),  # the replaced phase's index is named in the script
                        *_checks(saved),
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


def gauges_json(rollout: Rollout) -> str:
    """What `/metrics` shows of an active rollout, kept beside it by every save ('' once it ended):
    labels (id, namespace, service, canary), canary weight, evidence and its threshold, no-worse
    evidence and its threshold (None where the policy does not end steps early)."""
    if rollout.is_terminal:
        return ""
    no_worse = rollout.no_worse_evidence
    return json.dumps(
        [
            rollout.namespace,
            rollout.service,
            rollout.canary_revision,
            rollout.canary_weight,
            rollout.evidence,
            1 / rollout.policy.alpha_errors,
            no_worse,
            1 / rollout.policy.beta if no_worse is not None else None,
        ]
    )


CHECK_OUTCOMES = ("passed", "failed", "inconclusive", "errored")


def _checks(rollout: Rollout) -> list[int]:
    """Ticks by verdict outcome so far; the save adds the change to the store's totals for `/metrics`."""
    counted = rollout.checks.model_dump()
    return [int(counted[outcome]) for outcome in CHECK_OUTCOMES]

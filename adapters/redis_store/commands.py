"""The command inbox: an abort, pause, resume or promote answered 202 is durable in Redis first.

A Celery message alone is not enough: when the worker that took it dies, the message stays
unacknowledged until the broker's visibility timeout (minutes), and by then the canary may have
been promoted. So the API stores the command here before it answers, and the Celery task only
carries its id, as a wake-up. Any worker can then carry it out:

| key | type | holds |
|---|---|---|
| `cmd:{id}` | hash | the command (rollout, kind, actor, reason, sent_at), `owner` (the worker on it) and `applied` |
| `commands` | sorted set | every unfinished command, scored by when it must be sent again if nobody finished it |
| `cmds:{rollout}` | sorted set | a rollout's unfinished commands in the order they were accepted |
| `alive:{owner}` | string | a worker process's heartbeat (expires by itself when the process dies) |

A worker *claims* a command (only the oldest unfinished one of its rollout, so a pause and the
resume after it are applied in that order), applies it (the save that records its decision also
marks it `applied`, atomically, so it is applied once whoever else tries), carries out the write
it needs, and *finishes* it. The scheduler sends a command again when nobody has claimed it within
`PICKUP_SECONDS`, when its owner's heartbeat has lapsed (the worker died: seconds, not the lease),
or when its owner has held it past the lease. A command sent again after its decision was saved
repeats only the write, which is what brings stable back to 100 % after a worker died mid-abort.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from adapters.redis_store.base import StoreBase, lua, transient
from rollouts.model import ManualActionKind
from rollouts.records import Command

PICKUP_SECONDS = 2.0
"""A command nobody has claimed this long after it was sent (or sent again) is sent again."""

HEARTBEAT_TTL_MS = 2000
"""A worker process whose heartbeat is this old is dead; its commands go to another worker."""

HEARTBEAT_EVERY_SECONDS = 0.5

log = logging.getLogger("autocanary.commands")

_SUBMIT = """
-- KEYS: cmd hash, cmds:{rollout}, commands. ARGV: id, sent at, pickup at, then the fields.
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1
"""

_CLAIM = """
-- KEYS: cmd hash, commands, cmds:{rollout}. ARGV: owner, now, lease seconds, alive prefix, id
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[5])
  return {'gone'}
end
local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
if head and head ~= ARGV[5] then return {'queued'} end
local holder = redis.call('HGET', KEYS[1], 'owner') or ''
local due = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[5]) or '0')
if holder ~= '' and holder ~= ARGV[1] and redis.call('EXISTS', ARGV[4] .. holder) == 1
   and due > tonumber(ARGV[2]) then
  return {'busy'}
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[5])
return {'ok', unpack(redis.call('HGETALL', KEYS[1]))}
"""

_FINISH = """
-- KEYS: cmd hash, commands, cmds:{rollout}. ARGV: id. Returns the rollout's next command, if any.
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return redis.call('ZRANGE', KEYS[3], 0, 0)[1] or ''
"""

_RELEASE = """
-- KEYS: cmd hash, commands. ARGV: owner, retry at, id. Give a command back to be sent again soon.
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'owner', '')
  redis.call('ZADD', KEYS[2], 'XX', ARGV[2], ARGV[3])
end
return 0
"""

_REDELIVER = """
-- KEYS: commands. ARGV: now, alive prefix, cmd prefix, limit, pickup until.
local sent = {}
local entries = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[4]) - 1, 'WITHSCORES')
for i = 1, #entries, 2 do
  local id, due = entries[i], tonumber(entries[i + 1])
  local key = ARGV[3] .. id
  if redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', KEYS[1], id)
  else
    local holder = redis.call('HGET', key, 'owner') or ''
    local dead = holder ~= '' and redis.call('EXISTS', ARGV[2] .. holder) == 0
    if due <= tonumber(ARGV[1]) or dead then
      redis.call('HSET', key, 'owner', '')
      redis.call('ZADD', KEYS[1], ARGV[5], id)
      sent[#sent + 1] = id
    end
  end
end
return sent
"""


class CommandInbox(StoreBase):
    """The durable commands of one Redis (the same client and prefix as the `RolloutStore`)."""

    _submit = lua(_SUBMIT)
    _claim = lua(_CLAIM)
    _finish = lua(_FINISH)
    _release = lua(_RELEASE)
    _redeliver = lua(_REDELIVER)

    def key(self, command_id: str) -> str:
        return f"{self.prefix}:cmd:{command_id}"

    def _queue(self, rollout_id: str) -> str:
        return f"{self.prefix}:cmds:{rollout_id}"

    def _schedule(self) -> str:
        return f"{self.prefix}:commands"

    def submit(self, rollout_id: str, kind: ManualActionKind, actor: str, reason: str, sent_at: float) -> str:
        """Store a command (durable once this returns: on disk with Redis's AOF, and on the replicas
        the store waits for); its id, for the Celery wake-up."""
        command_id = uuid.uuid4().hex
        fields = {"rollout": rollout_id, "kind": kind.value, "actor": actor, "reason": reason, "sent_at": repr(sent_at)}
        fields.update(owner="", applied="0")
        with transient(f"store the {kind.value} command"):
            # One script, so the command and its two queue entries are written at once, and in a
            # pipeline of their own so `_durably` can wait for replicas before the API says 202.
            pipe = self.redis.pipeline(transaction=False)
            self._submit(
                keys=[self.key(command_id), self._queue(rollout_id), self._schedule()],
                args=[command_id, sent_at, sent_at + PICKUP_SECONDS, *(x for pair in fields.items() for x in pair)],
                client=pipe,
            )
            self._durably(pipe, f"store the {kind.value} command")
        return command_id

    def claim(self, command_id: str, rollout_id: str, owner: str, lease_seconds: float, now: float) -> Command | None:
        """Take the command for `owner`; None when it is finished, held by a live worker, or not
        yet its rollout's turn (the scheduler sends it again then)."""
        with transient("claim a command"):
            answer = self._claim(
                keys=[self.key(command_id), self._schedule(), self._queue(rollout_id)],
                args=[owner, now, lease_seconds, f"{self.prefix}:alive:", command_id],
            )
        if not answer or answer[0] != "ok":
            return None
        fields = dict(zip(answer[1::2], answer[2::2], strict=True))
        return Command(
            id=command_id,
            rollout_id=fields["rollout"],
            kind=ManualActionKind(fields["kind"]),
            actor=fields["actor"],
            reason=fields["reason"],
            sent_at=float(fields["sent_at"]),
            applied=fields.get("applied") == "1",
        )

    def rollout_of(self, command_id: str) -> str | None:
        with transient("read a command"):
            value = self.redis.hget(self.key(command_id), "rollout")
        return str(value) if value else None

    def finish(self, command: Command) -> str | None:
        """Done (applied and written, or refused): forget it; the id of the rollout's next command."""
        with transient("finish a command"):
            following = self._finish(
                keys=[self.key(command.id), self._schedule(), self._queue(command.rollout_id)], args=[command.id]
            )
        return str(following) or None

    def release(self, command: Command, owner: str, retry_in: float, now: float) -> None:
        """Not done yet (its write failed for now): send it again in `retry_in` seconds."""
        with transient("release a command"):
            self._release(keys=[self.key(command.id), self._schedule()], args=[owner, now + retry_in, command.id])

    def redeliver(self, now: float, limit: int = 1000) -> list[str]:
        """Commands to send again now: unclaimed for too long, owned by a dead worker, or held past the lease."""
        with transient("find commands to send again"):
            sent: Sequence[str] = self._redeliver(
                keys=[self._schedule()],
                args=[now, f"{self.prefix}:alive:", f"{self.prefix}:cmd:", limit, now + PICKUP_SECONDS],
            )
        return [str(command_id) for command_id in sent]

    def beat(self, owner: str) -> None:
        """This worker process is alive (called every few hundred milliseconds by its heartbeat thread)."""
        with transient("beat"):
            self.redis.set(f"{self.prefix}:alive:{owner}", "1", px=HEARTBEAT_TTL_MS)

    def pending(self) -> int:
        """Commands accepted and not finished yet."""
        with transient("count commands"):
            return int(self.redis.zcard(self._schedule()))

"""The heartbeat of a worker process: while it beats, the commands it holds are its own.

The scheduler sends a command again when its holder's heartbeat lapses (`CommandInbox`), so a
worker that dies mid-abort loses its commands to another within seconds, not after its lease.
"""

from __future__ import annotations

import logging
import threading

from adapters.redis_store.commands import HEARTBEAT_EVERY_SECONDS
from rollouts.errors import TransientError
from rollouts.ports import CommandInbox

log = logging.getLogger("autocanary.commands")


def start_heartbeat(inbox: CommandInbox, owner: str) -> threading.Event:
    """Beat for `owner` from a daemon thread until the process dies (or the returned event is set)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            try:
                inbox.beat(owner)
            except TransientError as exc:  # Redis away: nothing to tell anyone until it is back
                log.debug("heartbeat: %s", exc)
            stop.wait(HEARTBEAT_EVERY_SECONDS)

    threading.Thread(target=beat, name="heartbeat", daemon=True).start()
    return stop

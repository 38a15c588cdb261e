"""`WatchedObjects`: every object of one resource, cluster-wide, kept current in memory by one
LIST and then a WATCH from the LIST's resourceVersion on (what client-go's informers do).

Why: a worker ticks each rollout every few seconds; reading its Service with a GET per tick
made the Kubernetes client most of a worker's CPU (and one request per rollout tick on the API
server). Changes are rare next to ticks, so following them costs far less than asking.

What a copy may be, and how the callers live with it: a few milliseconds behind the cluster.
Ticks read the copy only to see that all is as expected; anything that differs is read again
from the API server before it is acted on (`Target.observe(..., fresh=True)`), and every write
reads the object fresh behind its guard, so a stale copy can delay a tick's decision, never
make a wrong one. Until the first LIST has landed, while a watch is broken, and for good after
the API server refused the watch (403: the role lacks `list`/`watch` cluster-wide), `get`
raises `NotSynced` and the caller reads directly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar, cast

import urllib3.exceptions
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from adapters.kubernetes.api import KubernetesApi
from rollouts.errors import PermanentError, TransientError

log = logging.getLogger("autocanary.kubernetes")

GONE = 410
MAX_DERIVED = 100_000
"""Derived values kept (then forgotten all at once): more than any worker's rollouts."""

T = TypeVar("T")


class NotSynced(Exception):
    """The copy cannot be trusted now: read from the API server."""


class WatchedObjects:
    def __init__(
        self,
        api: KubernetesApi,
        group: str,
        version: str,
        plural: str,
        *,
        watch_seconds: int = 300,
        retry_seconds: float = 1.0,
    ) -> None:
        self.api = api
        self.group, self.version, self.plural = group, version, plural
        self.watch_seconds = watch_seconds
        self.retry_seconds = retry_seconds
        self.refused: str | None = None
        """Why the API server will not let us watch (then every read goes to it)."""
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._derived: dict[Hashable, tuple[object, Any]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: watch.Watch | None = None

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def start(self) -> WatchedObjects:
        """Start following (once; a background thread). Returns at once: reads go to the API
        server until the first LIST has landed."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"watch-{self.plural}", daemon=True)
                self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._synced.clear()
        if self._watch is not None:
            self._watch.stop()  # type: ignore[no-untyped-call]

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as last seen (None: it does not exist), never to be modified by the caller."""
        if not self._synced.is_set():
            raise NotSynced(self.refused or f"{self.plural}: not following the API server's changes now")
        with self._lock:
            return self._objects.get((namespace, name))

    def derive(self, key: Hashable, obj: dict[str, Any], compute: Callable[[dict[str, Any]], T]) -> T:
        """`compute(obj)`, worked out once per version of the object (by `key`, e.g. who asks and
        for what): ticks see the same versions over and over."""
        version = obj["metadata"].get("resourceVersion")
        kept = self._derived.get(key)
        if kept is None or kept[0] != version:
            if len(self._derived) >= MAX_DERIVED:
                self._derived.clear()
            kept = self._derived[key] = (version, compute(obj))
        return cast(T, kept[1])

    def remember(self, obj: dict[str, Any]) -> None:
        """Take in an object read or written by this process, unless the copy already holds a newer one.

        So a worker's next tick sees its own write even before the watch brings it.
        """
        with self._changed:
            self._apply(obj, deleted=False)

    def wait_for(self, namespace: str, name: str, ready: Any, timeout: float) -> dict[str, Any] | None:
        """Wait up to `timeout` seconds for `ready(obj)` to hold for the copy of one object; the
        object once it does, None when the time ran out or the copy cannot be trusted."""
        with self._changed:
            ok = self._changed.wait_for(
                lambda: not self._synced.is_set() or ready(self._objects.get((namespace, name))), timeout
            )
            if not ok or not self._synced.is_set():
                return None
            return self._objects.get((namespace, name))

    # --- the background thread -------------------------------------------------------------------

    def _run(self) -> None:
        # While the copy is not trusted after a break every read goes to the API server: the break
        # is worth a warning (once, not at each retry), and so is its end, with how long it lasted.
        broken_since: float | None = None
        while not self._stop.is_set():
            try:
                version = self._list()
                if broken_since is not None:
                    unsynced = time.monotonic() - broken_since
                    log.warning(
                        "watch of %s listed again after %.1fs of reading from the API server", self.plural, unsynced
                    )
                    broken_since = None
                self._follow(version)
            except PermanentError as exc:  # RBAC or an unknown resource: reading directly is all we can do
                self.refused = f"cannot watch {self.plural}: {exc}"
                log.warning("%s; reading each object from the API server instead", self.refused)
                self._mark_unsynced()
                return
            except Exception as exc:  # the API server away, a broken stream: list again shortly
                self._mark_unsynced()
                if not self._stop.is_set():
                    first = broken_since is None
                    broken_since = time.monotonic() if first else broken_since
                    log.log(
                        logging.WARNING if first else logging.INFO,
                        "watch of %s broken, reading from the API server and listing again in %gs: %s",
                        self.plural,
                        self.retry_seconds,
                        exc,
                    )
                self._stop.wait(self.retry_seconds)

    def _list(self) -> str:
        found = self.api.call(
            f"list {self.plural}",
            lambda: self.api.custom.list_cluster_custom_object(
                self.group, self.version, self.plural, _request_timeout=self.api.request_timeout * 6
            ),
        )
        if not isinstance(found, dict):
            raise TransientError(f"list {self.plural}: unexpected answer {type(found).__name__}")
        objects = {
            (item["metadata"].get("namespace", ""), item["metadata"]["name"]): item
            for item in found.get("items", [])
            if isinstance(item, dict)
        }
        with self._changed:
            self._objects = objects
            self._changed.notify_all()
        return str(found.get("metadata", {}).get("resourceVersion", ""))

    def _follow(self, version: str) -> None:
        """Watch from `version` on, stream after stream, until a stream breaks or is Gone."""
        while not self._stop.is_set():
            self._watch = watch.Watch()  # type: ignore[no-untyped-call]
            stream = self._watch.stream(  # type: ignore[no-untyped-call]
                self.api.custom.list_cluster_custom_object,
                self.group,
                self.version,
                self.plural,
                resource_version=version,
                timeout_seconds=self.watch_seconds,
                allow_watch_bookmarks=True,
                deserialize=False,
                _request_timeout=(self.api.request_timeout, self.watch_seconds + 30),
            )
            self._synced.set()
            try:
                for event in stream:
                    kind, obj = event.get("type"), event.get("object")
                    if not isinstance(obj, dict):
                        continue
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        with self._changed:
                            self._apply(obj, deleted=kind == "DELETED")
                    # The next stream resumes after the last event (a BOOKMARK's included): with
                    # deserialize=False the client's Watch does not track it, and resuming from
                    # the LIST's version replayed every change since, until it was Gone.
                    seen = str((obj.get("metadata") or {}).get("resourceVersion") or "")
                    if seen and not _older(seen, version):
                        version = seen
            except ApiException as exc:
                if exc.status == GONE:  # too far behind: list again
                    raise TransientError(f"watch of {self.plural} expired") from exc
                if exc.status in (401, 403, 404):
                    raise PermanentError(f"{exc.status} {exc.reason}") from exc
                raise
            except KeyError as exc:
                if exc.args != ("raw_object",):
                    raise
                # The client's Watch reads an ERROR event's `raw_object`, which it only sets when
                # deserializing: the API server ended the stream with an error (410 Gone mostly).
                raise TransientError(f"watch of {self.plural} ended by the API server with an error") from exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise TransientError(f"watch of {self.plural}: {exc}") from exc

    def _apply(self, obj: dict[str, Any], *, deleted: bool) -> None:
        """Under the lock: keep `obj` unless the copy holds a newer version of it."""
        metadata = obj.get("metadata") or {}
        key = (str(metadata.get("namespace", "")), str(metadata.get("name", "")))
        held = self._objects.get(key)
        if held is not None and _older(metadata.get("resourceVersion"), held["metadata"].get("resourceVersion")):
            return
        if deleted:
            self._objects.pop(key, None)
        else:
            self._objects[key] = obj
        self._changed.notify_all()

    def _mark_unsynced(self) -> None:
        with self._changed:
            self._synced.clear()
            self._changed.notify_all()


def _older(version: Any, than: Any) -> bool:
    """resourceVersions are opaque, but every API server in use issues growing integers (etcd's
    revision); where both are integers the smaller is older, otherwise nothing is assumed."""
    try:
        return int(version) < int(than)
    except (TypeError, ValueError):
        return False

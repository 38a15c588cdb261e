"""Where Redis is: one server by URL, or the primary of a group that Redis Sentinel watches.

Production Redis runs with replicas under Sentinel, so the primary may change under a running
installation. Every process reaches Redis three ways, and each must follow a failover:

- the store's client (redis-py), through `Sentinel.master_for`, whose connections ask the
  Sentinels again for the primary when theirs fails or turns out to be a replica;
- the API's event streams (`redis.asyncio`), the same way;
- the Celery broker (kombu), through its `sentinel://` transport and `master_name`.

With Sentinels set, the URL still gives the password, user and database of the data nodes; its
host is not used. `wait_replicas` makes the writes that must survive a failover wait, in the same
pipeline, until that many replicas hold them (`WAIT`, see `StoreBase._durably`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

SOCKET_TIMEOUT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class RedisLocation:
    url: str = "redis://127.0.0.1:6379/0"
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str = "mymaster"
    sentinel_password: str | None = None
    wait_replicas: int = 0
    wait_timeout_ms: int = 1000

    @classmethod
    def parse(
        cls,
        url: str,
        sentinels: str = "",
        master_name: str = "mymaster",
        sentinel_password: str | None = None,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> RedisLocation:
        """From settings: `sentinels` is `host:port` entries separated by commas. A ValueError
        names the setting that is wrong."""
        addresses = []
        for entry in (part.strip() for part in sentinels.split(",")):
            if not entry:
                continue
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"AUTOCANARY_REDIS_SENTINELS: {entry!r} is not host:port")
            addresses.append((host.strip("[]"), int(port)))
        if addresses and not master_name:
            raise ValueError("AUTOCANARY_REDIS_MASTER_NAME: empty; Sentinel needs the name of the group it watches")
        if wait_replicas < 0:
            raise ValueError("AUTOCANARY_REDIS_WAIT_REPLICAS: must be 0 or more")
        if wait_timeout_ms <= 0:
            raise ValueError("AUTOCANARY_REDIS_WAIT_TIMEOUT_MS: must be more than 0")
        return cls(url, tuple(addresses), master_name, sentinel_password, wait_replicas, wait_timeout_ms)

    @property
    def uses_sentinel(self) -> bool:
        return bool(self.sentinels)

    def _data_node(self) -> dict[str, Any]:
        """The credentials and database of the data nodes, from the URL."""
        parts = urlsplit(self.url)
        database = parts.path.lstrip("/")
        return {
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None,
            "db": int(database) if database.isdigit() else 0,
        }

    def _sentinel_kwargs(self) -> dict[str, Any]:
        return {"password": self.sentinel_password, "socket_timeout": CONNECT_TIMEOUT_SECONDS}

    def client(self) -> redis.Redis:
        """The store's client (answers decoded to str)."""
        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": SOCKET_TIMEOUT_SECONDS,
            "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "health_check_interval": 30,
        }
        if not self.uses_sentinel:
            return redis.Redis.from_url(self.url, **options)
        sentinel = _untyped(redis.sentinel.Sentinel)(list(self.sentinels), sentinel_kwargs=self._sentinel_kwargs())
        primary: redis.Redis = sentinel.master_for(self.master_name, **options, **self._data_node())
        return primary

    def async_client(self) -> redis.asyncio.Redis:
        """A client of its own for one event stream (its blocking reads hold its connection)."""
        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": SOCKET_TIMEOUT_SECONDS,
            "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        }
        if not self.uses_sentinel:
            return redis.asyncio.Redis.from_url(self.url, **options)
        factory = _untyped(redis.asyncio.sentinel.Sentinel)
        sentinel = factory(list(self.sentinels), sentinel_kwargs=self._sentinel_kwargs())
        primary: redis.asyncio.Redis = sentinel.master_for(self.master_name, **options, **self._data_node())
        return primary

    def celery_broker(self) -> tuple[str, dict[str, Any]]:
        """The broker URL and the transport options that go with it, for `Celery(broker=...)`."""
        if not self.uses_sentinel:
            return self.url, {}
        node = self._data_node()
        credentials = ""
        if node["password"]:
            credentials = f"{quote(node['username'] or '', safe='')}:{quote(node['password'], safe='')}@"
        url = ";".join(f"sentinel://{credentials}{host}:{port}/{node['db']}" for host, port in self.sentinels)
        options: dict[str, Any] = {"master_name": self.master_name}
        if self.sentinel_password:
            options["sentinel_kwargs"] = {"password": self.sentinel_password}
        return url, options


def _untyped(factory: Any) -> Any:
    """redis-py's Sentinel classes carry no type hints; their clients are typed where they are used."""
    return factory

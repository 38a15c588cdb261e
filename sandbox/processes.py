"""Real processes for end-to-end tests, benchmarks and the demo: a private Redis, autocanary commands, load.

Each process runs in its own process group so a test can SIGKILL it (and its children) the way
an out-of-memory kill or a node loss would, and restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from sandbox.cluster import ENDPOINTS_FILE, Endpoints
from sandbox.loadgen import LoadResult, drive
from sandbox.prometheus import free_port

AUTOCANARY = str(Path(sys.executable).with_name("autocanary"))


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so `finally` blocks stop every process this one started.

    The demo and the benchmarks start their processes in process groups of their own (so tests
    can kill them singly); a `timeout` or a CI runner's SIGTERM reaches only the parent, which
    by default would die at once and leave Redis, Prometheus, the sandbox and workers running.
    """
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def _answering(port: int, what: str, timeout: float = 15.0) -> None:
    """Until the Redis (or Sentinel) on `port` answers PING; RuntimeError after `timeout`."""
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except (redis.ConnectionError, redis.BusyLoadingError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.05)


STREAM_NODE_MAX_BYTES = 1024
"""What the README recommends for autocanary's Redis (and deploy/ sets)."""


class RedisProcess:
    """redis-server on a free port with its own folder; AOF (fsync `always` unless told) when `durable`; a
    replica of the server on `replica_of` (a port on loopback) when given."""

    def __init__(
        self, directory: Path, durable: bool = True, replica_of: int | None = None, fsync: str = "always"
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.durable = durable
        self.fsync = fsync
        self.replica_of = replica_of
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        persistence = ["--appendonly", "yes", "--appendfsync", self.fsync] if self.durable else ["--appendonly", "no"]
        self.process = subprocess.Popen(  # noqa: S603 (our own command line)
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(self.directory),
                *persistence,
                # A replica's first sync starts at once, not after the default 5 s wait for others.
                "--repl-diskless-sync-delay",
                "0",
                # Each rollout's event log is a stream, and Redis gives every stream a node of this
                # size up front: 4 KB by default, most of a rollout's memory (README, "Redis").
                "--stream-node-max-bytes",
                str(STREAM_NODE_MAX_BYTES),
                *(["--replicaof", "127.0.0.1", str(self.replica_of)] if self.replica_of else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        _answering(self.port, "redis-server")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class SentinelProcess:
    """redis-sentinel on a free port watching the primary on `primary_port` as `master_name`.

    Quick to judge, as a test needs: a primary silent for `down_after_ms` is down for this
    Sentinel, and `quorum` Sentinels agreeing start a failover (which promotes a replica and
    points the others at it).
    """

    def __init__(
        self,
        directory: Path,
        primary_port: int,
        master_name: str = "mymaster",
        quorum: int = 2,
        down_after_ms: int = 1000,
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.primary_port = primary_port
        self.master_name = master_name
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "sentinel.conf"  # Sentinel rewrites its own file as it learns
        config.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {self.directory}",
                    f"sentinel monitor {self.master_name} 127.0.0.1 {self.primary_port} {self.quorum}",
                    f"sentinel down-after-milliseconds {self.master_name} {self.down_after_ms}",
                    f"sentinel failover-timeout {self.master_name} 10000",
                    f"sentinel parallel-syncs {self.master_name} 2",
                    "",
                ]
            )
        )
        binary = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"
        self.process = subprocess.Popen(  # noqa: S603 (our own command line)
            [binary, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        _answering(self.port, "redis-sentinel")

    def primary(self) -> int | None:
        """The port of the primary this Sentinel names now (None when it cannot say)."""
        client: Any = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            answer = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        except redis.RedisError:
            return None
        return int(answer[1]) if answer else None

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class SentinelGroup:
    """A primary, `replicas` replicas and three Sentinels (quorum 2), all with AOF: Redis as
    production runs it, on loopback, for the failover test and `bench.redis_wait`."""

    def __init__(
        self, directory: Path, replicas: int = 2, master_name: str = "mymaster", fsync: str = "always"
    ) -> None:
        (directory / "primary").mkdir(parents=True)
        self.primary = RedisProcess(directory / "primary", fsync=fsync)
        self.replicas = []
        for number in range(1, replicas + 1):
            (directory / f"replica-{number}").mkdir()
            self.replicas.append(
                RedisProcess(directory / f"replica-{number}", replica_of=self.primary.port, fsync=fsync)
            )
        self.sentinels = [
            SentinelProcess(directory / f"sentinel-{number}", self.primary.port, master_name) for number in (1, 2, 3)
        ]
        self.master_name = master_name

    @property
    def servers(self) -> list[RedisProcess]:
        return [self.primary, *self.replicas]

    @property
    def addresses(self) -> str:
        """For `AUTOCANARY_REDIS_SENTINELS`."""
        return ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)

    def start(self) -> None:
        for server in self.servers:
            server.start()
        deadline = time.monotonic() + 15
        while self.replicas_online(self.primary.port) < len(self.replicas):
            if time.monotonic() > deadline:
                raise RuntimeError("the replicas did not catch up with the primary")
            time.sleep(0.05)
        for sentinel in self.sentinels:
            sentinel.start()

    @staticmethod
    def replicas_online(port: int) -> int:
        """Replicas of the server on `port` that finished their first sync (only they answer WAIT)."""
        info = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2).info("replication")
        return sum(
            1
            for key, value in info.items()
            if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
        )

    def current_primary(self) -> int | None:
        """The primary's port, as a majority of the Sentinels name it (None while they disagree)."""
        named = [sentinel.primary() for sentinel in self.sentinels]
        port = max(set(named), key=named.count)
        return port if port is not None and named.count(port) >= 2 else None

    def stop(self) -> None:
        for sentinel in self.sentinels:
            with contextlib.suppress(subprocess.TimeoutExpired):
                sentinel.stop()
        for server in self.servers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.stop()


@dataclass
class Processes:
    """Worker and scheduler processes sharing one environment."""

    env: dict[str, str]
    log_dir: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, arguments: Sequence[str]) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        self.running[name] = subprocess.Popen(  # noqa: S603 (our own command line)
            [AUTOCANARY, *arguments],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, name: str) -> None:
        """SIGKILL the process and everything it started, with no chance to clean up."""
        process = self.running[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for name, process in self.running.items():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill(name)


class BackgroundLoad:
    """Steady requests to several hosts from a thread, until stopped (bounded by `max_seconds`)."""

    def __init__(
        self,
        gateway: str,
        hosts: Sequence[str],
        rate: float,
        max_seconds: float = 300,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """`headers` go with every request (a canary's match route selects by them)."""
        self._stop = threading.Event()
        self.results: list[LoadResult] = []
        self._live: dict[str, LoadResult] = {}

        def progress(host: str) -> Callable[[LoadResult], None]:
            return lambda result: self._live.__setitem__(host, result)

        async def main() -> None:
            runs = [
                drive(
                    gateway,
                    host,
                    rate,
                    max_seconds,
                    should_stop=self._stop.is_set,
                    on_progress=progress(host),
                    headers=headers,
                )
                for host in hosts
            ]
            self.results = list(await asyncio.gather(*runs))

        self._thread = threading.Thread(target=lambda: asyncio.run(main()), name="load", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    @property
    def sent(self) -> int:
        """Responses received so far, over every host (for diagnostics while the load runs)."""
        return sum(r.completed for r in (self.results or self._live.values()))

    @property
    def failed(self) -> int:
        return sum(r.failed_to_connect for r in (self.results or self._live.values()))

    @property
    def shed(self) -> int:
        return sum(r.shed for r in (self.results or self._live.values()))


class SandboxProcess:
    """`autocanary sandbox up` as a subprocess; `start()` returns its endpoints once it is up."""

    def __init__(self, state_dir: Path, *options: str) -> None:
        self.state_dir = state_dir
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.state_dir / "sandbox.log"

    def start(self, timeout: float = 60) -> Endpoints:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 (our own command line)
                [AUTOCANARY, "sandbox", "up", "--state-dir", str(self.state_dir), *self.options],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not (self.state_dir / ENDPOINTS_FILE).exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the sandbox did not start: {self.log_file.read_text()[-2000:]}")
            time.sleep(0.1)
        return Endpoints.load(self.state_dir)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

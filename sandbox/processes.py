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


class RedisProcess:
    """redis-server on a free port with its own folder; AOF (fsync always) when `durable`."""

    def __init__(self, directory: Path, durable: bool = True) -> None:
        self.directory = directory
        self.port = free_port()
        self.durable = durable
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]
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
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                return
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


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

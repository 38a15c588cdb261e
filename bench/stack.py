"""The processes a benchmark of the API runs against, started and stopped as one.

The sandbox without Prometheus (so that no metrics arrive: every rollout holds its step and logs
an `error` verdict each tick), a private Redis, two workers, the scheduler and one API process,
all on this machine.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from adapters.redis_store import RolloutStore
from sandbox.cluster import Endpoints
from sandbox.processes import Processes, RedisProcess, SandboxProcess
from sandbox.prometheus import free_port


@dataclass(frozen=True)
class ApiStack:
    endpoints: Endpoints
    store: RolloutStore
    url: str
    """The API's base URL."""


def wait_until(check: Callable[[], object], timeout: float, what: str) -> None:
    """Until `check()` is true (an HTTP error counts as not yet); exits the benchmark after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"bench: timed out waiting for {what}")


@contextmanager
def api_stack(prefix: str, tokens: str) -> Iterator[ApiStack]:
    """Everything up and the API answering `/healthz`; everything stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        base = Path(folder)
        sandbox = SandboxProcess(
            base / "sandbox", "--no-prometheus", "--reconcile-delay", "0.05", "--ready-after", "0.2"
        )
        (base / "redis").mkdir()
        redis = RedisProcess(base / "redis", durable=False)
        processes: Processes | None = None
        try:
            endpoints = sandbox.start()
            redis.start()
            port = free_port()
            env = {
                "AUTOCANARY_REDIS_URL": redis.url,
                "AUTOCANARY_KUBECONFIG": endpoints.kubeconfig,
                "AUTOCANARY_PROMETHEUS_URL": "http://127.0.0.1:9",  # no metrics: rollouts hold their step
                "AUTOCANARY_TOKENS": tokens,
            }
            processes = Processes(env, base)
            for process in ("worker-1", "worker-2"):
                processes.start(process, ["worker"])
            processes.start("scheduler", ["scheduler"])
            processes.start("api", ["api", "--port", str(port)])
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, 30, "the API")
            yield ApiStack(endpoints, RolloutStore.from_url(redis.url), url)
        finally:
            if processes:
                processes.stop_all()
            redis.stop()
            sandbox.stop()

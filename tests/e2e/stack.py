"""The product's processes for an end-to-end test against the sandbox: a private Redis, the API,
workers and the scheduler as real processes, with short leases and metric windows so rollouts
play in seconds; and how a test waits for a rollout to end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from adapters.redis_store import RolloutStore
from adapters.redis_store.connection import RedisLocation
from rollouts import Rollout
from sandbox.cluster import Endpoints
from sandbox.processes import Processes, RedisProcess, SentinelGroup
from sandbox.prometheus import free_port
from tests.knative import wait_for


@dataclass
class Stack:
    endpoints: Endpoints
    api: str
    store: RolloutStore

    def wait_terminal(self, rollout_id: str, timeout: float) -> Rollout:
        deadline = time.monotonic() + timeout
        while True:
            rollout = self.store.get(rollout_id)
            assert rollout is not None
            if rollout.is_terminal:
                return rollout
            if time.monotonic() > deadline:
                story = [f"{e.kind}: {e.message}" for e in self.store.events(rollout_id)]
                raise AssertionError(f"still {rollout.phase.value} after {timeout:g}s: {story}")
            time.sleep(0.3)


@contextmanager
def running(
    sandbox: Endpoints, base: Path, tokens: str, workers: int = 1, sentinels: SentinelGroup | None = None
) -> Iterator[tuple[str, RolloutStore]]:
    """The API's URL and the store, while Redis, the API, `workers` workers and the scheduler run.

    Redis is a private server, or, given `sentinels` (started), the primary they name: every
    process then reaches it through them and waits for one replica on the writes that must
    survive a failover.
    """
    redis_process = None if sentinels else RedisProcess(base / "redis")
    processes: Processes | None = None
    try:
        if redis_process:
            (base / "redis").mkdir()
            redis_process.start()
            location = RedisLocation(redis_process.url)
            redis_env = {"AUTOCANARY_REDIS_URL": redis_process.url}
        else:
            assert sentinels is not None
            location = RedisLocation.parse("redis://sentinel/0", sentinels.addresses, sentinels.master_name)
            redis_env = {
                "AUTOCANARY_REDIS_URL": location.url,
                "AUTOCANARY_REDIS_SENTINELS": sentinels.addresses,
                "AUTOCANARY_REDIS_MASTER_NAME": sentinels.master_name,
                "AUTOCANARY_REDIS_WAIT_REPLICAS": "1",
                "AUTOCANARY_REDIS_WAIT_TIMEOUT_MS": "3000",
            }
        port = free_port()
        env = {
            **redis_env,
            "AUTOCANARY_KUBECONFIG": sandbox.kubeconfig,
            "AUTOCANARY_PROMETHEUS_URL": sandbox.prometheus or "",
            "AUTOCANARY_TOKENS": tokens,
            "AUTOCANARY_METRICS_LAG_SECONDS": "1",
            "AUTOCANARY_METRICS_MIN_WINDOW_SECONDS": "2",
            "AUTOCANARY_LEASE_SECONDS": "3",
            "AUTOCANARY_CLAIM_SECONDS": "4",
        }
        processes = Processes(env, base)
        processes.start("api", ["api", "--port", str(port)])
        for number in range(1, workers + 1):
            processes.start(f"worker-{number}", ["worker"])
        processes.start("scheduler", ["scheduler"])
        api = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(f"{api}/healthz"), timeout=30, what="the API")
        yield api, RolloutStore.at(location)
    finally:
        if processes:
            processes.stop_all()
        if redis_process:
            redis_process.stop()


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False

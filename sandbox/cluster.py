"""`autocanary sandbox up`: the API server, controller, gateway, metrics and Prometheus together.

Everything but Prometheus runs on one asyncio loop in one process, sharing one `ClusterStore`;
Prometheus is a private subprocess scraping `/metrics` every second. When all are up, the
endpoints and a kubeconfig are written to the state folder, so the product (and `kubectl`)
connect exactly as they would to a real cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from sandbox.apiserver import create_apiserver
from sandbox.controller import Controller
from sandbox.deployments import DeploymentController
from sandbox.gateway import Gateway
from sandbox.metrics import RequestStats, create_metrics_app
from sandbox.prometheus import PrometheusServer
from sandbox.store import ClusterStore

ENDPOINTS_FILE = "endpoints.json"
KUBECONFIG_FILE = "kubeconfig"


@dataclass(frozen=True)
class SandboxOptions:
    state_dir: Path
    host: str = "127.0.0.1"
    apiserver_port: int = 0
    gateway_port: int = 0
    metrics_port: int = 0
    prometheus: bool = True
    prometheus_port: int = 0
    scrape_interval: str = "1s"
    reconcile_delay: float = 0.2
    ready_after: float = 0.5
    seed: int | None = None
    tag_header_routing: bool = True
    """Knative's `tag-header-based-routing` feature (config-features), on here by default."""


@dataclass(frozen=True)
class Endpoints:
    kubeconfig: str
    apiserver: str
    gateway: str
    metrics: str
    prometheus: str | None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def load(cls, state_dir: Path) -> Endpoints:
        data: dict[str, Any] = json.loads((state_dir / ENDPOINTS_FILE).read_text())
        return cls(**data)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the sandbox (several share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def kubeconfig(apiserver: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "autocanary-sandbox", "cluster": {"server": apiserver}}],
        "users": [{"name": "sandbox", "user": {"token": "sandbox"}}],
        "contexts": [
            {
                "name": "autocanary-sandbox",
                "context": {"cluster": "autocanary-sandbox", "user": "sandbox", "namespace": namespace},
            }
        ],
        "current-context": "autocanary-sandbox",
    }


def _bind(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP said outright: asyncio turns Nagle off (TCP_NODELAY) only on connections whose
    # socket names it, and with Nagle on every answer written in two parts (head, then body) waited
    # for the client's delayed ACK, 40 ms per request.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def run_sandbox(
    options: SandboxOptions, stop: asyncio.Event, on_ready: Callable[[Endpoints], None] | None = None
) -> None:
    """Serve until `stop` is set; then shut everything down, Prometheus included."""
    store = ClusterStore()
    stats = RequestStats()
    Controller(store, options.reconcile_delay, options.ready_after)
    DeploymentController(store, options.reconcile_delay, options.ready_after)
    apps: dict[str, Any] = {
        "apiserver": create_apiserver(store),
        "gateway": Gateway(store, stats, random.Random(options.seed), tag_header_routing=options.tag_header_routing),
        "metrics": create_metrics_app(stats),
    }
    ports = {
        "apiserver": options.apiserver_port,
        "gateway": options.gateway_port,
        "metrics": options.metrics_port,
    }
    sockets = {name: _bind(options.host, ports[name]) for name in apps}
    servers = {
        name: _Server(
            uvicorn.Config(
                app,
                log_level="warning",
                lifespan="off",
                access_log=False,
                interface="asgi3",
                timeout_graceful_shutdown=1,  # open watches do not end by themselves
            )
        )
        for name, app in apps.items()
    }
    tasks = [asyncio.create_task(servers[name].serve(sockets=[sockets[name]])) for name in apps]
    prometheus: PrometheusServer | None = None
    try:
        while not all(server.started for server in servers.values()):
            if any(task.done() for task in tasks):
                await asyncio.gather(*tasks)  # surface the startup error
                raise RuntimeError("a sandbox server stopped during startup")
            await asyncio.sleep(0.02)
        urls = {name: f"http://{options.host}:{sock.getsockname()[1]}" for name, sock in sockets.items()}
        options.state_dir.mkdir(parents=True, exist_ok=True)
        config_path = options.state_dir / KUBECONFIG_FILE
        config_path.write_text(yaml.safe_dump(kubeconfig(urls["apiserver"]), sort_keys=False))
        if options.prometheus:
            prometheus = PrometheusServer(
                options.state_dir / "prometheus",
                [urls["metrics"].removeprefix("http://")],
                scrape_interval=options.scrape_interval,
                port=options.prometheus_port,
                host=options.host,
            )
            await asyncio.get_running_loop().run_in_executor(None, prometheus.start)
        endpoints = Endpoints(
            kubeconfig=str(config_path.resolve()),
            apiserver=urls["apiserver"],
            gateway=urls["gateway"],
            metrics=urls["metrics"] + "/metrics",
            prometheus=prometheus.url if prometheus else None,
        )
        (options.state_dir / ENDPOINTS_FILE).write_text(endpoints.to_json() + "\n")
        if on_ready:
            on_ready(endpoints)
        await stop.wait()
    finally:
        for server in servers.values():
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        if prometheus:
            prometheus.stop()
        with contextlib.suppress(FileNotFoundError):
            (options.state_dir / ENDPOINTS_FILE).unlink()

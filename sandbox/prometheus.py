"""A private Prometheus from the Debian package, on a loopback port, with its own data folder.

Used by `autocanary sandbox up`, by the tests and by the benchmarks, so none of them depends on
(or disturbs) a Prometheus that may already run on the machine.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import httpx
import yaml


class PrometheusUnavailable(RuntimeError):
    """Prometheus is not installed or did not become ready."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class PrometheusServer:
    def __init__(
        self,
        data_dir: Path,
        targets: list[str],
        *,
        scrape_interval: str = "1s",
        port: int = 0,
        host: str = "127.0.0.1",
        metrics_path: str = "/metrics",
    ) -> None:
        self.data_dir = data_dir
        self.targets = targets
        self.scrape_interval = scrape_interval
        self.host = host
        self.port = port or free_port(host)
        self.metrics_path = metrics_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "prometheus.yml"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "prometheus.log"

    def write_config(self) -> None:
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": [
                {
                    "job_name": "sandbox",
                    "metrics_path": self.metrics_path,
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self, timeout: float = 30.0) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise PrometheusUnavailable(
                "prometheus is not installed: install the Debian package 'prometheus' (make bootstrap does)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 (our own arguments, no shell)
                [
                    binary,
                    f"--config.file={self.config_file}",
                    f"--storage.tsdb.path={self.data_dir / 'data'}",
                    f"--web.listen-address={self.host}:{self.port}",
                    "--web.enable-lifecycle",
                    "--storage.tsdb.retention.time=1d",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal reaches the sandbox, which stops this
            )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise PrometheusUnavailable(f"prometheus exited with {self.process.returncode}; see {self.log_file}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise PrometheusUnavailable(f"prometheus not ready after {timeout:g}s; see {self.log_file}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

"""Liveness and readiness over HTTP for the processes that serve no API (worker, scheduler).

Kubernetes probes need an endpoint: `/healthz` answers 200 while the process runs, `/readyz`
answers 200 only when every check (Redis, for both) passes, with each check's result as JSON,
as the API's `/readyz` does. A small threaded `http.server` on its own daemon thread: it never
touches the Celery consumer or the scheduler loop, and dies with the process.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("autocanary.health")

Check = Callable[[], bool]


def run_checks(checks: Mapping[str, Check]) -> dict[str, bool]:
    """Each check's outcome; a check that raises has failed."""
    results = {}
    for name, check in checks.items():
        try:
            results[name] = bool(check())
        except Exception:  # an unreachable dependency is "not ready", not a crashed probe
            log.warning("readiness check %s failed", name, exc_info=True)
            results[name] = False
    return results


class HealthServer:
    """`/healthz` and `/readyz` on `host:port` (port 0 picks a free one; see `.port`)."""

    def __init__(self, checks: Mapping[str, Check], host: str = "0.0.0.0", port: int = 8081) -> None:  # noqa: S104
        checks = dict(checks)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/healthz":
                    self._answer(200, {"status": "ok"})
                elif self.path == "/readyz":
                    results = run_checks(checks)
                    ready = all(results.values())
                    self._answer(200 if ready else 503, {"ready": ready, "checks": results})
                else:
                    self._answer(404, {"error": "not_found", "message": f"no route {self.path}"})

            def _answer(self, status: int, body: dict[str, object]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: object) -> None:
                return  # probes every few seconds would drown the log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

"""The sandbox's ingress: routes by `Host: {service}.{namespace}.example.com` across revisions,
a host one of Istio's VirtualServices claims (`Host: reviews`) by that VirtualService
(sandbox/mesh.py), and one of a Gateway API HTTPRoute's `hostnames` by that route
(sandbox/http_routes.py), each to the pods of a Deployment.

A tag's host (`{tag}-{service}.{namespace}.example.com`) reaches the revision the live traffic
tags with it, and so does the Service's own host with `Knative-Serving-Tag: {tag}` (when the
sandbox runs with `tag-header-based-routing`, as it does by default; an unknown tag takes the
default route). Every other Knative request goes to a revision drawn at random with the weights of the Service's live
`status.traffic` (what the controller last reconciled, as a real ingress would), answers
`Hello {TARGET}!` after the revision's simulated latency, or a 500 with its error rate, and is
counted in `RequestStats` with the time it really took. Revision behaviour comes from the
revision template's environment (a Deployment's pod template, for the mesh):

| variable | meaning | default |
|---|---|---|
| `TARGET` | who to greet | `World` |
| `SANDBOX_ERROR_RATE` | share of requests answered 500 (0..1) | 0 |
| `SANDBOX_LATENCY_MS` | median latency, lognormal | 0 (no delay) |
| `SANDBOX_LATENCY_SIGMA` | log-sd of that latency | 0.25 |
| `SANDBOX_PODS` | how many pods share the revision's requests (pod_name label) | 1 |
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

from sandbox.controller import revision_env
from sandbox.deployments import pod_env
from sandbox.http_routes import HttpRoutes
from sandbox.istio_metrics import MeshKey
from sandbox.mesh import Mesh, Request, Served
from sandbox.metrics import Receive, RequestStats, Scope, Send, SeriesKey
from sandbox.store import ClusterStore


@dataclass(frozen=True)
class Behaviour:
    target: str
    error_rate: float
    latency_ms: float
    latency_sigma: float
    pods: tuple[str, ...]


def behaviour_of(revision_name: str, env: dict[str, str]) -> Behaviour:
    pods = max(1, int(env.get("SANDBOX_PODS", "1") or 1))
    digest = hashlib.sha256(revision_name.encode()).hexdigest()
    return Behaviour(
        target=env.get("TARGET", "World"),
        error_rate=min(1.0, max(0.0, float(env.get("SANDBOX_ERROR_RATE", "0") or 0))),
        latency_ms=max(0.0, float(env.get("SANDBOX_LATENCY_MS", "0") or 0)),
        latency_sigma=max(0.0, float(env.get("SANDBOX_LATENCY_SIGMA", "0.25") or 0)),
        pods=tuple(f"{revision_name}-deployment-{digest[:10]}-{digest[10 + i * 5 : 15 + i * 5]}" for i in range(pods)),
    )


class Gateway:
    def __init__(
        self,
        store: ClusterStore,
        stats: RequestStats,
        rng: random.Random | None = None,
        *,
        tag_header_routing: bool = True,
    ) -> None:
        self.store = store
        self.tag_header_routing = tag_header_routing
        self.stats = stats
        self.rng = rng or random.Random()
        self.mesh = Mesh(store, self.rng)
        self.http_routes = HttpRoutes(store, self.rng)
        self._behaviours: dict[tuple[str, str], Behaviour] = {}  # revisions are immutable

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        host = next((v.decode() for k, v in scope["headers"] if k == b"host"), "")
        request = _request(scope)
        served = self.mesh.route(host, request) or self.http_routes.route(host, request)
        if served is not None:
            await self._serve_mesh(send, served, started)
            return
        parts = host.split(":")[0].split(".")
        if len(parts) < 2:
            await _respond(send, 404, f"no route for host {host!r}: want {{service}}.{{namespace}}.example.com\n")
            return
        service_name, namespace = parts[0], parts[1]
        service = self.store.peek("services", namespace, service_name)
        tagged = None
        if service is None:  # a tag's own host, `{tag}-{service}.{namespace}.example.com`
            service_name, tagged = self._tag_host(namespace, parts[0])
            service = self.store.peek("services", namespace, service_name) if tagged else None
        elif self.tag_header_routing and "knative-serving-tag" in request.headers:
            tagged = _tagged(service, request.headers["knative-serving-tag"])  # an unknown tag: the default route
        if service is None:
            await _respond(send, 404, f"service {namespace}/{service_name} not found\n")
            return
        revision = tagged or self._pick(service.get("status", {}).get("traffic") or [])
        behaviour = self._behaviour(namespace, revision) if revision else None
        if revision is None or behaviour is None:
            await _respond(send, 503, f"service {namespace}/{service_name} has no ready traffic target\n")
            return
        code, body = await self._answer(behaviour)
        await _respond(send, code, body, revision)
        pod = behaviour.pods[self.rng.randrange(len(behaviour.pods))]
        took = time.perf_counter() - started
        self.stats.record(SeriesKey(namespace, service_name, revision, pod, code), took)
        # As the sidecar of a mesh in front of Knative reports it (net-istio labels the pods).
        mesh = MeshKey(namespace, service_name, f"{revision}-deployment", "unknown", code, canonical_revision=revision)
        self.stats.mesh.record(mesh, took)

    async def _serve_mesh(self, send: Send, served: Served, started: float) -> None:
        if served.deployment is None:
            await _respond(send, served.status, f"no healthy upstream: {served.problem}\n")
            return
        found = self.store.peek("deployments", served.namespace, served.deployment)
        # A Deployment's template may change, so its behaviour is read each time (it is small).
        behaviour = behaviour_of(served.deployment, pod_env(found or {}))
        code, body = await self._answer(behaviour)
        await _respond(send, code, body, served.deployment)
        key = MeshKey(served.namespace, served.service, served.deployment, served.version, code)
        self.stats.mesh.record(key, time.perf_counter() - started)

    async def _answer(self, behaviour: Behaviour) -> tuple[int, str]:
        if behaviour.latency_ms > 0:
            delay = behaviour.latency_ms * math.exp(behaviour.latency_sigma * self.rng.gauss(0, 1)) / 1000
            await asyncio.sleep(delay)
        if self.rng.random() < behaviour.error_rate:
            return 500, "Internal Server Error (SANDBOX_ERROR_RATE)\n"
        return 200, f"Hello {behaviour.target}!\n"

    def _pick(self, traffic: list[dict[str, object]]) -> str | None:
        targets = [(str(t["revisionName"]), int(str(t.get("percent", 0)))) for t in traffic if t.get("revisionName")]
        total = sum(weight for _, weight in targets)
        if total <= 0:
            return None
        draw = self.rng.uniform(0, total)
        for name, weight in targets:
            draw -= weight
            if draw < 0:
                return name
        return next(name for name, weight in reversed(targets) if weight > 0)

    def _tag_host(self, namespace: str, label: str) -> tuple[str, str | None]:
        """The Service and revision whose tag answers at `{label}.{namespace}`, if any does."""
        for name in self.store.names("services", namespace):
            if label.endswith(f"-{name}") and len(label) > len(name) + 1:
                revision = _tagged(self.store.peek("services", namespace, name) or {}, label[: -len(name) - 1])
                if revision:
                    return name, revision
        return label, None

    def _behaviour(self, namespace: str, revision: str) -> Behaviour | None:
        cached = self._behaviours.get((namespace, revision))
        if cached is None:
            found = self.store.peek("revisions", namespace, revision)
            if found is None:
                return None
            cached = self._behaviours[(namespace, revision)] = behaviour_of(revision, revision_env(found))
        return cached


def _tagged(service: dict[str, object], tag: str) -> str | None:
    """The revision the Service's live traffic tags with `tag` (None: no such tag)."""
    status = service.get("status")
    traffic = status.get("traffic") if isinstance(status, dict) else None
    for entry in traffic if isinstance(traffic, list) else []:
        if isinstance(entry, dict) and entry.get("tag") == tag and entry.get("revisionName"):
            return str(entry["revisionName"])
    return None


def _request(scope: Scope) -> Request:
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1").lower()
        headers[key] = f"{headers[key]}, {value.decode('latin-1')}" if key in headers else value.decode("latin-1")
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
    return Request(
        path=str(scope.get("path", "/")), query=query, headers=headers, method=str(scope.get("method", "GET"))
    )


async def _respond(send: Send, status: int, body: str, revision: str | None = None) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    if revision:
        headers.append((b"x-sandbox-revision", revision.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body.encode()})

"""The sandbox's Gateway API data plane: which Deployment serves a request for an HTTPRoute's hostname.

A request whose `Host` (its port ignored) is one of an HTTPRoute's `hostnames` (`*.example.com`
matching any name below it) is routed as the Gateway API specifies:

1. of every rule's matches (a rule without matches matches every path, as `PathPrefix /`), the
   one taken is the most precise that holds: an `Exact` path before a prefix, a longer prefix
   before a shorter one, then a match with a `method`, then the most headers, then the most
   query parameters; ties go to the older route, then to the first rule in the list;
2. one of the rule's `backendRefs`, drawn by weight (default 1; all 0: the request gets a 500,
   as the specification requires);
3. the backend Service, by its `selector`, to a Deployment with available pods, whose pods
   answer (as sandbox/gateway.py describes). The request is reported in Istio's series (an
   Istio gateway implementing the route), `destination_service_name` being the backend Service.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from sandbox.deployments import available_replicas, pod_labels
from sandbox.mesh import Request, Served
from sandbox.store import ClusterStore


@dataclass(frozen=True)
class _Candidate:
    precedence: tuple[int, int, int, int, int, str, int]
    namespace: str
    route: str
    rule: dict[str, Any]
    match: dict[str, Any]


class HttpRoutes:
    def __init__(self, store: ClusterStore, rng: random.Random) -> None:
        self.store = store
        self.rng = rng
        self._hostnames: dict[tuple[str, str], list[str]] = {}
        store.subscribe(self._changed)

    def _changed(self, plural: str, namespace: str, name: str) -> None:
        if plural != "httproutes":
            return
        found = self.store.peek("httproutes", namespace, name)
        if found is None:
            self._hostnames.pop((namespace, name), None)
            return
        self._hostnames[(namespace, name)] = [str(h) for h in (found.get("spec") or {}).get("hostnames") or []]

    def route(self, host: str, request: Request) -> Served | None:
        """Where the request goes; None when no HTTPRoute claims the host."""
        hostname = host.split(":", maxsplit=1)[0].lower()
        owners = [key for key, names in self._hostnames.items() if any(_host_matches(n, hostname) for n in names)]
        if not owners:
            return None
        candidates = [c for namespace, name in owners for c in self._candidates(namespace, name)]
        for candidate in sorted(candidates, key=lambda c: c.precedence):
            if _matches(candidate.match, request):
                return self._backend(candidate)
        namespace, name = owners[0]
        return Served(namespace, name, "", "", None, f"no rule of HTTPRoute {name} matched", status=404)

    def _candidates(self, namespace: str, name: str) -> list[_Candidate]:
        route = self.store.peek("httproutes", namespace, name) or {}
        created = str((route.get("metadata") or {}).get("creationTimestamp", "")) + name
        found = []
        for index, rule in enumerate((route.get("spec") or {}).get("rules") or []):
            for match in rule.get("matches") or [{}]:
                found.append(_Candidate((*_specificity(match), created, index), namespace, name, rule, match))
        return found

    def _backend(self, candidate: _Candidate) -> Served:
        backends = [b for b in candidate.rule.get("backendRefs") or [] if int(b.get("weight", 1)) > 0]
        if not backends:
            return Served(candidate.namespace, candidate.route, "", "", None, "no backend with weight", status=500)
        draw = self.rng.uniform(0, sum(int(b.get("weight", 1)) for b in backends))
        chosen = backends[-1]
        for backend in backends:
            draw -= int(backend.get("weight", 1))
            if draw < 0:
                chosen = backend
                break
        namespace = str(chosen.get("namespace") or candidate.namespace)
        service_name = str(chosen.get("name"))
        service = self.store.peek("core-services", namespace, service_name)
        if service is None:
            return Served(
                namespace, service_name, "", "", None, f"backend Service {service_name} not found", status=500
            )
        selector = {str(k): str(v) for k, v in ((service.get("spec") or {}).get("selector") or {}).items()}
        for deployment_name in self.store.names("deployments", namespace):
            deployment = self.store.peek("deployments", namespace, deployment_name)
            if deployment is None or not selector:
                continue
            pods = pod_labels(deployment)
            if all(pods.get(k) == v for k, v in selector.items()) and available_replicas(deployment) > 0:
                return Served(namespace, service_name, "", pods.get("version", "unknown"), deployment_name)
        return Served(namespace, service_name, "", "", None, f"Service {service_name} selects no available pods")


def _host_matches(pattern: str, hostname: str) -> bool:
    if pattern.startswith("*."):
        return hostname.endswith(pattern[1:]) and len(hostname) > len(pattern) - 1
    return pattern == hostname


def _specificity(match: dict[str, Any]) -> tuple[int, int, int, int, int]:
    """Sorts ascending from the most precise match (the Gateway API's precedence)."""
    path = match.get("path") or {"type": "PathPrefix", "value": "/"}
    kind = path.get("type", "PathPrefix")
    return (
        0 if kind == "Exact" else 1,
        -len(str(path.get("value", "/"))) if kind != "RegularExpression" else 0,
        0 if match.get("method") else 1,
        -len(match.get("headers") or []),
        -len(match.get("queryParams") or []),
    )


def _matches(match: dict[str, Any], request: Request) -> bool:
    path = match.get("path") or {"type": "PathPrefix", "value": "/"}
    kind, value = path.get("type", "PathPrefix"), str(path.get("value", "/"))
    if kind == "Exact" and request.path != value:
        return False
    if kind == "PathPrefix" and not _path_prefix(value, request.path):
        return False
    if kind == "RegularExpression" and re.fullmatch(value, request.path) is None:
        return False
    if match.get("method") and request.method != match["method"]:
        return False
    for condition in match.get("headers") or []:
        found = request.headers.get(str(condition["name"]).lower())
        if found is None or not _value_matches(condition, found):
            return False
    for condition in match.get("queryParams") or []:
        found = request.query.get(str(condition["name"]))
        if found is None or not _value_matches(condition, found):
            return False
    return True


def _path_prefix(prefix: str, path: str) -> bool:
    """Element-wise, as the Gateway API defines it: `/abc` matches `/abc/d`, not `/abcd`."""
    prefix = prefix.rstrip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


def _value_matches(condition: dict[str, Any], value: str) -> bool:
    if condition.get("type", "Exact") == "RegularExpression":
        return re.fullmatch(str(condition["value"]), value) is not None
    return value == str(condition["value"])

"""The sandbox's Istio data plane: which Deployment serves a request for a VirtualService host.

A request whose `Host` is one of a VirtualService's `hosts` (a short name such as `reviews` is
also reachable as `reviews.{namespace}`, `.svc` and `.svc.cluster.local`, as Istio reads short
names in the VirtualService's namespace) is routed as Envoy routes it:

1. the `http` routes in order; the first whose `match` list is empty or has one entry whose
   conditions all hold (`uri`, `headers`, `queryParams`, `method`; `exact`, `prefix` or
   `regex`, a regex matching the whole value as RE2 does in Envoy) takes the request;
2. one of its destinations, drawn by weight (weights are relative; a single destination takes
   everything);
3. the destination's subset, by the DestinationRule for its host: the subset's labels select
   the Deployment (an available one) whose pods answer.

Cookies are matched as Istio users match them: a regex on the `cookie` header.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from sandbox.deployments import available_replicas, pod_labels
from sandbox.store import ClusterStore


@dataclass(frozen=True)
class Request:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-case names."""
    method: str = "GET"


@dataclass(frozen=True)
class Served:
    """Where a mesh request went: the VirtualService's namespace, the destination's service,
    subset and version label, and the Deployment whose pods answer (None: nothing to answer)."""

    namespace: str
    service: str
    subset: str
    version: str
    deployment: str | None
    problem: str = ""
    status: int = 503
    """The answer when nothing serves it (503 no healthy upstream; a Gateway API route's 404 or 500)."""


def host_names(host: str, namespace: str) -> list[str]:
    """The names a VirtualService host answers to (short names expand in its namespace)."""
    if "." in host:
        return [host]
    return [host, f"{host}.{namespace}", f"{host}.{namespace}.svc", f"{host}.{namespace}.svc.cluster.local"]


def short_name(host: str) -> str:
    return host.split(".", maxsplit=1)[0]


class Mesh:
    def __init__(self, store: ClusterStore, rng: random.Random) -> None:
        self.store = store
        self.rng = rng
        self._by_host: dict[str, tuple[str, str]] = {}
        self._hosts_of: dict[tuple[str, str], list[str]] = {}
        store.subscribe(self._changed)

    def _changed(self, plural: str, namespace: str, name: str) -> None:
        if plural != "virtualservices":
            return
        for host in self._hosts_of.pop((namespace, name), []):
            if self._by_host.get(host) == (namespace, name):
                del self._by_host[host]
        found = self.store.peek("virtualservices", namespace, name)
        if found is None:
            return
        names = [n for host in (found.get("spec") or {}).get("hosts") or [] for n in host_names(str(host), namespace)]
        self._hosts_of[(namespace, name)] = names
        for host in names:
            self._by_host.setdefault(host, (namespace, name))  # the first VirtualService for a host wins

    def route(self, host: str, request: Request) -> Served | None:
        """Where the request goes; None when no VirtualService claims the host."""
        owner = self._by_host.get(host.split(":", maxsplit=1)[0])
        if owner is None:
            return None
        namespace, name = owner
        virtual_service = self.store.peek("virtualservices", namespace, name) or {}
        for route in (virtual_service.get("spec") or {}).get("http") or []:
            matches = route.get("match") or []
            if matches and not any(_matches(match, request) for match in matches):
                continue
            destination = self._pick(route.get("route") or [])
            if destination is None:
                return Served(namespace, short_name(host), "", "", None, "the route has no destination with weight")
            return self._resolve(namespace, destination)
        return Served(namespace, short_name(host), "", "", None, f"no route of VirtualService {name} matched")

    def _pick(self, destinations: list[dict[str, Any]]) -> dict[str, Any] | None:
        if len(destinations) == 1:
            return dict(destinations[0].get("destination") or {})
        total = sum(int(d.get("weight", 0)) for d in destinations)
        if total <= 0:
            return None
        draw = self.rng.uniform(0, total)
        for candidate in destinations:
            draw -= int(candidate.get("weight", 0))
            if draw < 0:
                return dict(candidate.get("destination") or {})
        return dict(next(d for d in reversed(destinations) if int(d.get("weight", 0)) > 0).get("destination") or {})

    def _resolve(self, namespace: str, destination: dict[str, Any]) -> Served:
        service, subset = short_name(str(destination.get("host", ""))), str(destination.get("subset") or "")
        labels = self._subset_labels(namespace, service, subset) if subset else {"app": service}
        if labels is None:
            return Served(namespace, service, subset, "", None, f"no subset {subset} for host {service}")
        for deployment_name in self.store.names("deployments", namespace):
            deployment = self.store.peek("deployments", namespace, deployment_name)
            if deployment is None:
                continue
            pods = pod_labels(deployment)
            if all(pods.get(key) == value for key, value in labels.items()) and available_replicas(deployment) > 0:
                return Served(namespace, service, subset, pods.get("version", "unknown"), deployment_name)
        return Served(namespace, service, subset, labels.get("version", ""), None, f"no available pods for {labels}")

    def _subset_labels(self, namespace: str, service: str, subset: str) -> dict[str, str] | None:
        for rule_name in self.store.names("destinationrules", namespace):
            rule = self.store.peek("destinationrules", namespace, rule_name) or {}
            spec = rule.get("spec") or {}
            if short_name(str(spec.get("host", ""))) != service:
                continue
            for candidate in spec.get("subsets") or []:
                if candidate.get("name") == subset:
                    return {str(k): str(v) for k, v in (candidate.get("labels") or {}).items()}
        return None


def _matches(match: dict[str, Any], request: Request) -> bool:
    """One HTTPMatchRequest: every condition it names holds."""
    if "uri" in match and not string_matches(match["uri"], request.path):
        return False
    if "method" in match and not string_matches(match["method"], request.method):
        return False
    for name, condition in (match.get("headers") or {}).items():
        value = request.headers.get(str(name).lower())
        if value is None or not string_matches(condition, value):
            return False
    for name, condition in (match.get("queryParams") or {}).items():
        value = request.query.get(str(name))
        if value is None or not string_matches(condition, value):
            return False
    return True


def string_matches(condition: dict[str, Any], value: str) -> bool:
    if "exact" in condition:
        return value == str(condition["exact"])
    if "prefix" in condition:
        return value.startswith(str(condition["prefix"]))
    if "regex" in condition:
        return re.fullmatch(str(condition["regex"]), value) is not None
    return False

"""Istio behind the ports: two subsets of a VirtualService's host as a `Target`, the weights of
one of its `http` routes as a `Router` (design.md, "Istio facts").

The rollout manages one route of the VirtualService: the one it names, or the one whose
destinations are exactly its two subsets. autocanary writes only that route's two weights and,
for request-match steps, a route of its own (named `autocanary-{name}-{canary}`) placed before
it; every other route and field is written back as it was read. Each write is one JSON merge
patch of `spec.http` conditioned on `metadata.resourceVersion`: whatever changed between the read
and the write meets a 409, and the re-read goes through the guard again. A subset is ready when
the DestinationRule for the host gives it labels that select a Deployment with available pods.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from adapters.kubernetes.api import KubernetesApi
from adapters.kubernetes.watched import WatchedObjects
from adapters.observing import observe_by_namespace
from adapters.route_lists import RouteList, RouteListRouter
from rollouts.errors import PermanentError, TargetNotFound, ValidationError
from rollouts.ports import (
    Observation,
    RequestMatch,
    RoutePlan,
    TargetRef,
    TargetRequest,
    TargetState,
    TrafficTarget,
    VersionState,
)

KIND = "istio"
GROUP, VERSION = "networking.istio.io", "v1"


def own_route_name(ref: TargetRef) -> str:
    """The name of the match route autocanary adds for this rollout's canary."""
    return f"autocanary-{ref.name}-{ref.canary}"[:253]


def short_host(host: str) -> str:
    return host.split(".", 1)[0]


def _subsets(route: Mapping[str, Any]) -> list[str]:
    return [str((d.get("destination") or {}).get("subset") or "") for d in route.get("route") or []]


def managed_route(http: Sequence[Mapping[str, Any]], ref: TargetRef) -> int | None:
    """The index of the route the rollout manages in `spec.http`, or None when it is gone."""
    if ref.route:
        return next((i for i, route in enumerate(http) if route.get("name") == ref.route), None)
    own = own_route_name(ref)
    found = [
        i
        for i, r in enumerate(http)
        if r.get("name") != own and sorted(_subsets(r)) == sorted((ref.stable, ref.canary))
    ]
    return found[0] if len(found) == 1 else None


def virtual_service_state(found: dict[str, Any], ref: TargetRef) -> TargetState:
    """The VirtualService as the rollout sees it: the managed route's destinations as its split.

    A destination to another host or without a subset shows under a name no subset has, so the
    pure rules see a split that no longer pins the two subsets; a route that is gone shows as an
    unknown split for the same reason.
    """
    metadata = found["metadata"]
    http = (found.get("spec") or {}).get("http") or []
    index = managed_route(http, ref)
    if index is None:
        split: tuple[TrafficTarget, ...] = (
            TrafficTarget(version=f"(route {ref.route or 'to both subsets'} gone)", percent=100),
        )
    else:
        split = tuple(_traffic(destination, ref) for destination in http[index].get("route") or [])
    generation = int(metadata.get("generation", 0))
    own = next((r for r in http if r.get("name") == own_route_name(ref)), None)
    return TargetState(
        route_match=match_fingerprint(http[index]) if index is not None else ref.route_match,
        own_route=json.dumps({k: own.get(k) for k in ("match", "route")}, sort_keys=True) if own else "",
        namespace=metadata["namespace"],
        name=metadata["name"],
        generation=generation,
        observed_generation=generation,  # Istio pushes configuration; there is no status to wait for
        resource_version=str(metadata.get("resourceVersion", "")),
        spec_traffic=split,
        status_traffic=split,
        newest_version=None,
        newest_ready_version=None,
        ready="True",
    )


def match_fingerprint(route: Mapping[str, Any]) -> str:
    """A route's request matches as canonical JSON ("" when it matches every request)."""
    match = route.get("match")
    return json.dumps(match, sort_keys=True, separators=(",", ":")) if match else ""


def _traffic(destination: Mapping[str, Any], ref: TargetRef) -> TrafficTarget:
    target = destination.get("destination") or {}
    subset, host = str(target.get("subset") or ""), str(target.get("host") or "")
    name = subset if subset and short_host(host) == short_host(ref.host) else f"{host}/{subset or '(no subset)'}"
    return TrafficTarget(version=name, percent=int(destination.get("weight") or 0))


class IstioTarget:
    """Two subsets of a VirtualService's host, their Deployments found through the DestinationRule."""

    def __init__(
        self, api: KubernetesApi, *, read_concurrency: int = 16, watched: WatchedObjects | None = None
    ) -> None:
        self.api = api
        self.read_concurrency = read_concurrency
        self.watched = watched

    def get(self, namespace: str, name: str) -> TargetState:
        found = self.api.get(GROUP, VERSION, "virtualservices", namespace, name)
        return virtual_service_state(found, TargetRef(KIND, namespace, name, "", ""))

    def observe(self, refs: Sequence[TargetRef], *, fresh: bool = False) -> Mapping[TargetRef, Observation]:
        """One LIST of VirtualServices per busy namespace, single GETs otherwise; namespaces concurrently."""
        return observe_by_namespace(
            refs,
            get=self._get_or_none,
            list_namespace=lambda namespace: {
                item["metadata"]["name"]: item for item in self.api.list(GROUP, VERSION, "virtualservices", namespace)
            },
            state=virtual_service_state,
            concurrency=self.read_concurrency,
            watched=self.watched,
            fresh=fresh,
        )

    def _get_or_none(self, ref: TargetRef) -> dict[str, Any] | None:
        try:
            return self.api.get(GROUP, VERSION, "virtualservices", ref.namespace, ref.name)
        except PermanentError:
            return None

    def version(self, ref: TargetRef, version: str) -> VersionState:
        labels = self._subset_labels(ref.namespace, ref.host, version)
        if labels is None:
            raise PermanentError(f"no subset {version} for host {ref.host} in any DestinationRule of {ref.namespace}")
        available = self._available_deployments(ref.namespace, ref.host, labels)
        if available:
            return VersionState(
                ref.namespace, version, "True", "Available", f"Deployment {available[0]} has available pods"
            )
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        return VersionState(
            ref.namespace, version, "False", "Unavailable", f"no Deployment selected by {selector} has available pods"
        )

    def resolve(self, spec: TargetRequest) -> TargetRef:
        """Registration's checks, each naming its field: the VirtualService exists (404), the route
        is found and unambiguous, the DestinationRule has both subsets, each subset's Deployment has
        available pods (422). The managed route's name is kept ("" when it has none: it is found
        again by its two subsets), and the subsets' destination host."""
        if spec.stable == spec.canary:
            raise ValidationError.single("canary_subset", f"must differ from stable_subset ({spec.stable!r})")
        where = f"{spec.namespace}/{spec.name}"
        try:
            found = self.api.get(GROUP, VERSION, "virtualservices", spec.namespace, spec.name)
        except PermanentError as exc:
            raise TargetNotFound("virtual_service", f"VirtualService {where} not found") from exc
        http = (found.get("spec") or {}).get("http") or []
        route = self._route(http, spec, where)
        hosts = {str((d.get("destination") or {}).get("host") or "") for d in route.get("route") or []}
        if len(hosts) != 1:
            raise ValidationError.single(
                "route", f"the route's destinations name several hosts ({', '.join(sorted(hosts))})"
            )
        host = hosts.pop()
        subsets = self._rule_subsets(spec, host)
        for field, subset in (
            ("stable_subset", spec.stable),
            ("canary_subset", spec.canary),
        ):
            if subset not in subsets:
                known = ", ".join(sorted(subsets)) or "none"
                raise ValidationError.single(
                    field, f"the DestinationRule for {host} has no subset {subset} (it has {known})"
                )
            selector = ",".join(f"{k}={v}" for k, v in subsets[subset].items())
            if subsets[subset].get("version") != subset:
                raise ValidationError.single(
                    field,
                    f"subset {subset} selects {selector or 'every pod'}: Istio reports a version by its pods'"
                    f" `version` label, so the subset must select version={subset} to be measured",
                )
            if not self._available_deployments(spec.namespace, host, subsets[subset]):
                raise ValidationError.single(
                    field, f"subset {subset} ({selector}) selects no Deployment with available pods in {spec.namespace}"
                )
        name = str(route.get("name") or "")
        return TargetRef(
            KIND, spec.namespace, spec.name, spec.stable, spec.canary, name, host, match_fingerprint(route)
        )

    def _route(self, http: list[dict[str, Any]], spec: TargetRequest, where: str) -> dict[str, Any]:
        pair = sorted((spec.stable, spec.canary))
        if spec.route:
            named = [r for r in http if r.get("name") == spec.route]
            if not named:
                names = ", ".join(str(r.get("name")) for r in http if r.get("name")) or "none is named"
                raise ValidationError.single(
                    "route", f"VirtualService {where} has no http route {spec.route} ({names})"
                )
            if sorted(_subsets(named[0])) != pair:
                raise ValidationError.single(
                    "route", f"route {spec.route} does not route to exactly {pair[0]} and {pair[1]}"
                )
            return named[0]
        candidates = [(i, r) for i, r in enumerate(http) if sorted(_subsets(r)) == pair]
        if not candidates:
            raise ValidationError.single(
                "route", f"no http route of VirtualService {where} routes to exactly {pair[0]} and {pair[1]}"
            )
        if len(candidates) > 1:
            listed = ", ".join(str(r.get("name") or f"http[{i}]") for i, r in candidates)
            raise ValidationError.single(
                "route", f"several http routes of {where} route to both subsets ({listed}); name one"
            )
        return candidates[0][1]

    def _rule_subsets(self, spec: TargetRequest, host: str) -> dict[str, dict[str, str]]:
        if spec.rule:
            try:
                rules = [self.api.get(GROUP, VERSION, "destinationrules", spec.namespace, spec.rule)]
            except PermanentError as exc:
                raise ValidationError.single(
                    "destination_rule", f"DestinationRule {spec.namespace}/{spec.rule} not found"
                ) from exc
        else:
            rules = self._rules_for(spec.namespace, host)
            if len(rules) != 1:
                problem = "no DestinationRule" if not rules else "several DestinationRules"
                raise ValidationError.single(
                    "destination_rule", f"{problem} for host {host} in {spec.namespace}; name one"
                )
        return _subset_labels_of(rules[0])

    def _rules_for(self, namespace: str, host: str) -> list[dict[str, Any]]:
        """The DestinationRules of the namespace for this host (short names compared)."""
        return [
            rule
            for rule in self.api.list(GROUP, VERSION, "destinationrules", namespace)
            if short_host(str((rule.get("spec") or {}).get("host", ""))) == short_host(host)
        ]

    def _subset_labels(self, namespace: str, host: str, subset: str) -> dict[str, str] | None:
        for rule in self._rules_for(namespace, host):
            labels = _subset_labels_of(rule).get(subset)
            if labels is not None:
                return labels
        return None

    def _available_deployments(self, namespace: str, host: str, labels: Mapping[str, str]) -> list[str]:
        """The Deployments with available pods that carry the subset's labels. A label selector
        would match the Deployments' own labels, not their pods', so they are filtered here; where
        pods are labelled `app` (Istio's convention), only the host's app counts, since a subset
        selecting by `version` alone would also match other apps' pods in the namespace."""
        selected = []
        for deployment in self.api.list("apps", "v1", "deployments", namespace):
            pods = ((deployment.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
            if all(pods.get(k) == v for k, v in labels.items()):
                selected.append((deployment, pods))
        if any(pods.get("app") == short_host(host) for _, pods in selected):
            selected = [(d, pods) for d, pods in selected if pods.get("app") == short_host(host)]
        return [
            str(d["metadata"]["name"])
            for d, _ in selected
            if int((d.get("status") or {}).get("availableReplicas") or 0) > 0
        ]


def _subset_labels_of(rule: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """A DestinationRule's subsets: each name with the pod labels it selects."""
    return {
        str(s.get("name")): {str(k): str(v) for k, v in (s.get("labels") or {}).items()}
        for s in (rule.get("spec") or {}).get("subsets") or []
    }


class IstioRouter(RouteListRouter):
    """The managed route's two weights, and autocanary's own match route before it."""

    def __init__(
        self,
        api: KubernetesApi,
        *,
        conflict_retries: int = 5,
        backoff: float = 0.05,
        watched: WatchedObjects | None = None,
    ) -> None:
        super().__init__(
            api,
            VIRTUAL_SERVICE_ROUTES,
            frozenset({"header", "cookie", "uri", "query", "method"}),
            conflict_retries=conflict_retries,
            backoff=backoff,
            watched=watched,
        )


def planned_http(http: list[dict[str, Any]], index: int, ref: TargetRef, plan: RoutePlan) -> list[dict[str, Any]]:
    """`spec.http` carrying the plan: the managed route's weights set, the match route in front of
    it when the plan has matches, and taken out when it has none."""
    own = own_route_name(ref)
    weights = {ref.stable: plan.weights.stable, ref.canary: plan.weights.canary}
    managed = dict(http[index])
    managed["route"] = [
        {**d, "weight": weights.get(str((d.get("destination") or {}).get("subset") or ""), d.get("weight", 0))}
        for d in managed.get("route") or []
    ]
    updated: list[dict[str, Any]] = []
    for position, route in enumerate(http):
        if route.get("name") == own:
            continue
        if position == index:
            if plan.matches:
                host = str(((managed.get("route") or [{}])[0].get("destination") or {}).get("host") or ref.host)
                updated.append(
                    {
                        "name": own,
                        "match": [istio_match(plan.matches)],
                        "route": [{"destination": {"host": host, "subset": ref.canary}}],
                    }
                )
            updated.append(managed)
        else:
            updated.append(route)
    return updated


def istio_match(matches: Sequence[RequestMatch]) -> dict[str, Any]:
    """One HTTPMatchRequest whose conditions all must hold (a cookie is a regex on its header)."""
    found: dict[str, Any] = {}
    for match in matches:
        if match.field == "header":
            found.setdefault("headers", {})[match.name.lower()] = {match.how: match.value}
        elif match.field == "cookie":
            pattern = rf"^(.*?;\s*)?({re.escape(match.name)}={re.escape(match.value)})(;.*)?$"
            found.setdefault("headers", {})["cookie"] = {"regex": pattern}
        elif match.field == "uri":
            found["uri"] = {match.how: match.value}
        elif match.field == "query":
            found.setdefault("queryParams", {})[match.name] = {match.how: match.value}
        elif match.field == "method":
            found["method"] = {"exact": match.value}
        else:
            raise PermanentError(f"the Istio router cannot route by {match.field}")
    return found


VIRTUAL_SERVICE_ROUTES = RouteList(
    group=GROUP,
    version=VERSION,
    plural="virtualservices",
    kind="VirtualService",
    field="http",
    entry="route",
    unnamed="to both subsets",
    managed=managed_route,
    planned=planned_http,
    own_name=own_route_name,
    state=virtual_service_state,
)
"""A VirtualService's `spec.http`, as `RouteListRouter` writes it."""

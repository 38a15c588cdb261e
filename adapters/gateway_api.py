"""Gateway API behind the ports: two backend Services of an HTTPRoute rule as a `Target`, that
rule's `backendRefs` weights as a `Router` (design.md, "Three axes").

The rollout manages one rule of the HTTPRoute: the one it names (`rule`: the rule's `name`), or
the one rule whose `backendRefs` name both Services. autocanary writes only the two weights of
that rule (as percents: Gateway API weights are relative, so 95 and 5 split 95/5) and, for
request-match steps, a rule of its own (`name: autocanary-{canary}`) before it, routing to the
canary alone. Its matches are each of the managed rule's matches with the step's conditions
added, so it is more precise than the managed rule under the Gateway API's precedence (more
headers, a method, a longer or exact path) and wins whatever the order. Every other rule and
field is written back as it was read. Each write is one JSON merge patch of `spec.rules`
conditioned on `metadata.resourceVersion`; a 409 re-reads and goes through the guard again. A
backend is ready when its Service selects a Deployment with available pods.
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

KIND = "gateway-api"
GROUP, VERSION = "gateway.networking.k8s.io", "v1"
PLURAL = "httproutes"

Rules = list[dict[str, Any]]


def own_rule_name(ref: TargetRef) -> str:
    """The name of the match rule autocanary adds for this rollout's canary."""
    return f"autocanary-{ref.canary}"[:253]


def _backends(rule: Mapping[str, Any]) -> list[str]:
    return [str(b.get("name") or "") for b in rule.get("backendRefs") or []]


def managed_rule(rules: Sequence[Mapping[str, Any]], ref: TargetRef) -> int | None:
    """The index of the rule the rollout manages in `spec.rules`, or None when it is gone."""
    if ref.route:
        return next((i for i, rule in enumerate(rules) if rule.get("name") == ref.route), None)
    own = own_rule_name(ref)
    found = [
        i
        for i, rule in enumerate(rules)
        if rule.get("name") != own and sorted(set(_backends(rule))) == sorted((ref.stable, ref.canary))
    ]
    return found[0] if len(found) == 1 else None


def matches_fingerprint(rule: Mapping[str, Any]) -> str:
    """A rule's matches as canonical JSON ("" when it matches every request)."""
    matches = rule.get("matches")
    return json.dumps(matches, sort_keys=True, separators=(",", ":")) if matches else ""


def http_route_state(found: dict[str, Any], ref: TargetRef) -> TargetState:
    """The HTTPRoute as the rollout sees it: the managed rule's backends as its split.

    A backend other than the two Services, or a rule that is gone, shows under a name neither
    has, so the pure rules see a split that no longer pins the two and stop writing.
    """
    metadata = found["metadata"]
    rules = (found.get("spec") or {}).get("rules") or []
    index = managed_rule(rules, ref)
    if index is None:
        split: tuple[TrafficTarget, ...] = (
            TrafficTarget(version=f"(rule {ref.route or 'to both backends'} gone)", percent=100),
        )
    else:
        split = tuple(_traffic(backend, ref) for backend in rules[index].get("backendRefs") or [])
    own = next((r for r in rules if r.get("name") == own_rule_name(ref)), None)
    generation = int(metadata.get("generation", 0))
    return TargetState(
        route_match=matches_fingerprint(rules[index]) if index is not None else ref.route_match,
        own_route=json.dumps({k: own.get(k) for k in ("matches", "backendRefs")}, sort_keys=True) if own else "",
        namespace=metadata["namespace"],
        name=metadata["name"],
        generation=generation,
        observed_generation=generation,  # the route's status is the implementation's; weights apply as written
        resource_version=str(metadata.get("resourceVersion", "")),
        spec_traffic=split,
        status_traffic=split,
        newest_version=None,
        newest_ready_version=None,
        ready="True",
    )


def _traffic(backend: Mapping[str, Any], ref: TargetRef) -> TrafficTarget:
    name = str(backend.get("name") or "")
    namespace = str(backend.get("namespace") or ref.namespace)
    is_service = backend.get("group", "") == "" and backend.get("kind", "Service") == "Service"
    shown = (
        name if is_service and namespace == ref.namespace else f"{backend.get('kind', 'Service')} {namespace}/{name}"
    )
    return TrafficTarget(version=shown, percent=int(backend.get("weight", 1)))


class GatewayApiTarget:
    """Two backend Services of an HTTPRoute rule, their pods found through each Service's selector."""

    def __init__(
        self, api: KubernetesApi, *, read_concurrency: int = 16, watched: WatchedObjects | None = None
    ) -> None:
        self.api = api
        self.read_concurrency = read_concurrency
        self.watched = watched

    def get(self, namespace: str, name: str) -> TargetState:
        found = self.api.get(GROUP, VERSION, PLURAL, namespace, name)
        return http_route_state(found, TargetRef(KIND, namespace, name, "", ""))

    def observe(self, refs: Sequence[TargetRef], *, fresh: bool = False) -> Mapping[TargetRef, Observation]:
        """One LIST of HTTPRoutes per busy namespace, single GETs otherwise; namespaces concurrently."""
        return observe_by_namespace(
            refs,
            get=self._get_or_none,
            list_namespace=lambda namespace: {
                item["metadata"]["name"]: item for item in self.api.list(GROUP, VERSION, PLURAL, namespace)
            },
            state=http_route_state,
            concurrency=self.read_concurrency,
            watched=self.watched,
            fresh=fresh,
        )

    def _get_or_none(self, ref: TargetRef) -> dict[str, Any] | None:
        try:
            return self.api.get(GROUP, VERSION, PLURAL, ref.namespace, ref.name)
        except PermanentError:
            return None

    def version(self, ref: TargetRef, version: str) -> VersionState:
        service = self._service(ref.namespace, version)
        if service is None:
            raise PermanentError(f"Service {ref.namespace}/{version} not found")
        available, selector = self._available(ref.namespace, service)
        if available:
            return VersionState(
                ref.namespace, version, "True", "Available", f"Deployment {available[0]} has available pods"
            )
        return VersionState(
            ref.namespace, version, "False", "Unavailable", f"Service {version} ({selector}) selects no available pods"
        )

    def resolve(self, spec: TargetRequest) -> TargetRef:
        """Registration's checks, each naming its field: the HTTPRoute exists (404), the rule is found
        and routes to both backends (422), both backend Services exist and select available pods
        (422). The managed rule is kept by its name ("" when it has none: it is found again by its
        two backends, which must then be unambiguous)."""
        if spec.stable == spec.canary:
            raise ValidationError.single("canary_backend", f"must differ from stable_backend ({spec.stable!r})")
        where = f"{spec.namespace}/{spec.name}"
        try:
            found = self.api.get(GROUP, VERSION, PLURAL, spec.namespace, spec.name)
        except PermanentError as exc:
            raise TargetNotFound("http_route", f"HTTPRoute {where} not found") from exc
        backends = (("stable_backend", spec.stable), ("canary_backend", spec.canary))
        services = {backend: self._service(spec.namespace, backend) for _, backend in backends}
        for field, backend in backends:
            if services[backend] is None:
                raise ValidationError.single(field, f"Service {spec.namespace}/{backend} not found")
        rules = (found.get("spec") or {}).get("rules") or []
        index = self._rule(rules, spec, where)
        rule = rules[index]
        for field, backend in backends:
            service = services[backend] or {}
            if backend not in _backends(rule):
                listed = ", ".join(_backends(rule)) or "none"
                raise ValidationError.single(
                    field, f"rule {_rule_label(rule, index)} has no backendRef {backend} ({listed})"
                )
            available, selector = self._available(spec.namespace, service)
            if not available:
                raise ValidationError.single(
                    field, f"Service {backend} ({selector}) selects no Deployment with available pods"
                )
        name = str(rule.get("name") or "")
        if (
            not name
            and managed_rule(rules, TargetRef(KIND, spec.namespace, spec.name, spec.stable, spec.canary)) != index
        ):
            raise ValidationError.single(
                "rule", f"rule {index} has no name and is not the only rule routing to both backends; give it a name"
            )
        return TargetRef(KIND, spec.namespace, spec.name, spec.stable, spec.canary, name, "", matches_fingerprint(rule))

    def _rule(self, rules: Rules, spec: TargetRequest, where: str) -> int:
        if spec.route:
            if spec.route.isdigit():
                index = int(spec.route)
                if index >= len(rules):
                    raise ValidationError.single("rule", f"HTTPRoute {where} has {len(rules)} rules; no rule {index}")
                return index
            named = [i for i, rule in enumerate(rules) if rule.get("name") == spec.route]
            if not named:
                names = ", ".join(str(r.get("name")) for r in rules if r.get("name")) or "none is named"
                raise ValidationError.single("rule", f"HTTPRoute {where} has no rule {spec.route} ({names})")
            return named[0]
        pair = {spec.stable, spec.canary}
        candidates = [i for i, rule in enumerate(rules) if pair <= set(_backends(rule))]
        if not candidates:
            raise ValidationError.single(
                "rule", f"no rule of HTTPRoute {where} routes to both {spec.stable} and {spec.canary}"
            )
        if len(candidates) > 1:
            listed = ", ".join(_rule_label(rules[i], i) for i in candidates)
            raise ValidationError.single(
                "rule", f"several rules of {where} route to both backends ({listed}); name one"
            )
        return candidates[0]

    def _service(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.api.get_core("services", namespace, name)
        except PermanentError:
            return None

    def _available(self, namespace: str, service: Mapping[str, Any]) -> tuple[list[str], str]:
        """The Deployments with available pods that the Service selects, and its selector in words."""
        selector = {str(k): str(v) for k, v in ((service.get("spec") or {}).get("selector") or {}).items()}
        words = ",".join(f"{k}={v}" for k, v in selector.items()) or "no selector"
        if not selector:
            return [], words
        found = []
        for deployment in self.api.list("apps", "v1", "deployments", namespace):
            pods = ((deployment.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
            available = int((deployment.get("status") or {}).get("availableReplicas") or 0)
            if available > 0 and all(pods.get(k) == v for k, v in selector.items()):
                found.append(str(deployment["metadata"]["name"]))
        return found, words


def _rule_label(rule: Mapping[str, Any], index: int) -> str:
    return str(rule.get("name") or f"rules[{index}]")


class GatewayApiRouter(RouteListRouter):
    """The managed rule's two weights, and autocanary's own match rule before it."""

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
            HTTP_ROUTE_RULES,
            frozenset({"header", "cookie", "uri", "query", "method"}),
            conflict_retries=conflict_retries,
            backoff=backoff,
            watched=watched,
        )


def planned_rules(rules: Rules, index: int, ref: TargetRef, plan: RoutePlan) -> Rules:
    """`spec.rules` carrying the plan: the managed rule's two weights set, the match rule in front
    of it when the plan has matches, and taken out when it has none."""
    own = own_rule_name(ref)
    weights = {ref.stable: plan.weights.stable, ref.canary: plan.weights.canary}
    managed = dict(rules[index])
    managed["backendRefs"] = [
        {**b, "weight": weights[str(b.get("name"))]} if str(b.get("name")) in weights else dict(b)
        for b in managed.get("backendRefs") or []
    ]
    updated: Rules = []
    for position, rule in enumerate(rules):
        if rule.get("name") == own:
            continue
        if position == index:
            if plan.matches:
                canary = next(b for b in managed["backendRefs"] if str(b.get("name")) == ref.canary)
                updated.append(
                    {
                        "name": own,
                        "matches": [gateway_match(plan.matches, base) for base in managed.get("matches") or [{}]],
                        "backendRefs": [{k: v for k, v in canary.items() if k != "weight"}],
                    }
                )
            updated.append(managed)
        else:
            updated.append(rule)
    return updated


def gateway_match(matches: Sequence[RequestMatch], base: Mapping[str, Any]) -> dict[str, Any]:
    """One HTTPRouteMatch: the managed rule's match `base` with every condition of the step added
    (a header prefix becomes a regex, as Gateway API matches headers exactly or by regex; a cookie
    is a regex on its header, as with Istio)."""
    found: dict[str, Any] = {k: (list(v) if isinstance(v, list) else v) for k, v in base.items()}
    for match in matches:
        if match.field in ("header", "cookie"):
            name, condition = _header_condition(match)
            found["headers"] = [h for h in found.get("headers") or [] if str(h.get("name")).lower() != name]
            found["headers"].append({"name": name, **condition})
        elif match.field == "uri":
            kind = {"exact": "Exact", "prefix": "PathPrefix", "regex": "RegularExpression"}[match.how]
            found["path"] = {"type": kind, "value": match.value}
        elif match.field == "query":
            condition = _value_condition(match)
            found["queryParams"] = [q for q in found.get("queryParams") or [] if q.get("name") != match.name]
            found["queryParams"].append({"name": match.name, **condition})
        elif match.field == "method":
            found["method"] = match.value
        else:
            raise PermanentError(f"the Gateway API router cannot route by {match.field}")
    return found


def _header_condition(match: RequestMatch) -> tuple[str, dict[str, str]]:
    if match.field == "cookie":
        pattern = rf"^(.*?;\s*)?({re.escape(match.name)}={re.escape(match.value)})(;.*)?$"
        return "cookie", {"type": "RegularExpression", "value": pattern}
    return match.name.lower(), _value_condition(match)


def _value_condition(match: RequestMatch) -> dict[str, str]:
    if match.how == "exact":
        return {"type": "Exact", "value": match.value}
    if match.how == "prefix":
        return {"type": "RegularExpression", "value": re.escape(match.value) + ".*"}
    return {"type": "RegularExpression", "value": match.value}


HTTP_ROUTE_RULES = RouteList(
    group=GROUP,
    version=VERSION,
    plural=PLURAL,
    kind="HTTPRoute",
    field="rules",
    entry="rule",
    unnamed="to both backends",
    managed=managed_rule,
    planned=planned_rules,
    own_name=own_rule_name,
    state=http_route_state,
)
"""An HTTPRoute's `spec.rules`, as `RouteListRouter` writes it."""

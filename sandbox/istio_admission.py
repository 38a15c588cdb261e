"""What a real cluster refuses of the Istio and apps/v1 objects the sandbox holds.

- VirtualService and DestinationRule: the checks of istiod's validating webhook
  (`validation.istio.io`) that autocanary and the canary walkthroughs can run into, with its
  message shape: `admission webhook "validation.istio.io" denied the request: configuration is
  invalid: ...`. Weights are relative in recent Istio (its validation no longer requires a sum of
  100): each is non-negative and several destinations must not all weigh 0.
- Deployment: the API server's own validation (422 `Invalid`): a selector, matched by the
  pod template's labels.
"""

from __future__ import annotations

import re
from typing import Any

from sandbox.store import ApiError

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
STRING_MATCH_TYPES = ("exact", "prefix", "regex")


def istio_denial(problems: list[str]) -> ApiError:
    if len(problems) == 1:
        detail = problems[0]
    else:
        detail = f"{len(problems)} errors occurred:\n" + "\n".join(f"\t* {problem}" for problem in problems)
    return ApiError(
        400,
        "BadRequest",
        f'admission webhook "validation.istio.io" denied the request: configuration is invalid: {detail}',
    )


def validate_virtual_service(obj: dict[str, Any]) -> list[str]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return ["spec is required"]
    problems: list[str] = []
    hosts = spec.get("hosts")
    if not isinstance(hosts, list) or not hosts:
        problems.append("virtual service must have at least one host")
    http = spec.get("http") or []
    if not isinstance(http, list):
        return [*problems, "http must be a list of routes"]
    for index, route in enumerate(http):
        problems += _http_route_problems(route, index)
    return problems


def _http_route_problems(route: Any, index: int) -> list[str]:
    if not isinstance(route, dict):
        return [f"http[{index}] must be an object"]
    problems: list[str] = []
    destinations = route.get("route") or []
    if not destinations and not route.get("redirect") and not route.get("directResponse"):
        problems.append("HTTP route, redirect or directResponse is required")
    total = 0
    for destination in destinations if isinstance(destinations, list) else []:
        if not isinstance(destination, dict) or not isinstance(destination.get("destination"), dict):
            problems.append("destination is required")
            continue
        target = destination["destination"]
        if not target.get("host"):
            problems.append("destination must have a host")
        subset = target.get("subset")
        if subset is not None and not (isinstance(subset, str) and _DNS1123_LABEL.match(subset)):
            problems.append(f"subset name is invalid: {subset}")
        weight = destination.get("weight", 0)
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
            problems.append(f"weight {weight} < 0" if isinstance(weight, int) else f"weight {weight!r} is not a number")
            continue
        total += weight
    if isinstance(destinations, list) and len(destinations) > 1 and total == 0 and not problems:
        problems.append("total destination weight = 0")
    for match in route.get("match") or []:
        problems += _match_problems(match)
    return problems


def _match_problems(match: Any) -> list[str]:
    if not isinstance(match, dict):
        return ["match must be an object"]
    problems: list[str] = []
    string_matches = [("uri", match.get("uri"))]
    for field in ("headers", "queryParams"):
        for name, value in (match.get(field) or {}).items():
            string_matches.append((f"{field}.{name}", value))
    for where, value in string_matches:
        if value is None:
            continue
        kinds = [kind for kind in STRING_MATCH_TYPES if isinstance(value, dict) and kind in value]
        if len(kinds) != 1:
            problems.append(f"{where}: a string match needs exactly one of exact, prefix or regex")
            continue
        if kinds[0] == "regex":
            try:
                re.compile(str(value["regex"]))
            except re.error as exc:
                problems.append(f'"{value["regex"]}": {exc}; Istio uses RE2 style regex-based match')
    return problems


def validate_destination_rule(obj: dict[str, Any]) -> list[str]:
    spec = obj.get("spec")
    if not isinstance(spec, dict) or not spec.get("host"):
        return ["destination rule must have a host"]
    problems: list[str] = []
    seen: set[str] = set()
    for subset in spec.get("subsets") or []:
        name = subset.get("name") if isinstance(subset, dict) else None
        if not isinstance(name, str) or not _DNS1123_LABEL.match(name):
            problems.append(f"subset name is invalid: {name}")
            continue
        if name in seen:
            problems.append(f"duplicate subset names: {name}")
        seen.add(name)
    return problems


def validate_deployment(obj: dict[str, Any]) -> ApiError | None:
    """The 422 the API server answers for a Deployment it cannot accept, or None."""
    name = str((obj.get("metadata") or {}).get("name", ""))
    spec: dict[str, Any] = obj["spec"] if isinstance(obj.get("spec"), dict) else {}
    selector = spec["selector"].get("matchLabels") if isinstance(spec.get("selector"), dict) else None
    if not selector:
        return ApiError.invalid("deployments", name, "spec.selector", "Required value")
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if any(template_labels.get(key) != value for key, value in selector.items()):
        return ApiError.invalid(
            "deployments",
            name,
            "spec.template.metadata.labels",
            f"Invalid value: {template_labels}: `selector` does not match template `labels`",
        )
    return None

"""What a real cluster refuses of Gateway API HTTPRoutes and core Services.

HTTPRoute (`gateway.networking.k8s.io/v1`) is a CRD: the API server checks it against the CRD's
OpenAPI schema and CEL rules, and answers 422 `Invalid` naming the field, e.g. `HTTPRoute.gateway.
networking.k8s.io "shop" is invalid: spec.rules[0].backendRefs[0].weight: Invalid value: 1000001:
spec.rules[0].backendRefs[0].weight in body should be less than or equal to 1000000`. The checks
here are the ones of the standard channel's schema that autocanary's writes and the walkthroughs
can run into: hostnames, at most 16 rules each with at most 64 matches and 16 backendRefs, rule
names unique, weights 0..1000000, a port on every Service backend, path, header, query parameter
and method matches with their types. A core Service (`v1`) needs `spec.ports`.
"""

from __future__ import annotations

import re
from typing import Any

from sandbox.store import ApiError

HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SECTION_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
PATH_TYPES = ("Exact", "PathPrefix", "RegularExpression")
VALUE_TYPES = ("Exact", "RegularExpression")
MAX_WEIGHT = 1_000_000


class _Invalid(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field, self.problem = field, problem


def _require(condition: bool, field: str, problem: str) -> None:
    if not condition:
        raise _Invalid(field, problem)


def _list(value: Any, field: str, most: int) -> list[Any]:
    if value is None:
        return []
    _require(
        isinstance(value, list),
        field,
        f'Invalid value: "{type(value).__name__}": {field} in body must be of type array',
    )
    _require(len(value) <= most, field, f"Too many: {len(value)}: must have at most {most} items")
    return list(value)


def validate_http_route(obj: dict[str, Any]) -> ApiError | None:
    """The refusal the API server gives this HTTPRoute, or None when it is stored."""
    name = str((obj.get("metadata") or {}).get("name", ""))
    try:
        _check_route(obj.get("spec"))
    except _Invalid as invalid:
        return ApiError.invalid("httproutes", name, invalid.field, invalid.problem)
    return None


def _check_route(spec: Any) -> None:
    _require(isinstance(spec, dict), "spec", "Required value")
    for index, hostname in enumerate(_list(spec.get("hostnames"), "spec.hostnames", 16)):
        field = f"spec.hostnames[{index}]"
        _require(
            isinstance(hostname, str) and 0 < len(hostname) <= 253 and HOSTNAME.match(hostname) is not None,
            field,
            f"Invalid value: \"{hostname}\": {field} in body should match '{HOSTNAME.pattern}'",
        )
    names: set[str] = set()
    for index, rule in enumerate(_list(spec.get("rules"), "spec.rules", 16)):
        field = f"spec.rules[{index}]"
        _require(isinstance(rule, dict), field, "Invalid value: must be an object")
        if rule.get("name") is not None:
            rule_name = rule["name"]
            _require(
                isinstance(rule_name, str) and SECTION_NAME.match(rule_name) is not None,
                f"{field}.name",
                f"Invalid value: \"{rule_name}\": {field}.name in body should match '{SECTION_NAME.pattern}'",
            )
            _require(
                rule_name not in names,
                "spec.rules",
                'Invalid value: "array": Rule name must be unique within the route',
            )
            names.add(rule_name)
        for position, match in enumerate(_list(rule.get("matches"), f"{field}.matches", 64)):
            _check_match(match, f"{field}.matches[{position}]")
        for position, backend in enumerate(_list(rule.get("backendRefs"), f"{field}.backendRefs", 16)):
            _check_backend(backend, f"{field}.backendRefs[{position}]")


def _check_match(match: Any, field: str) -> None:
    _require(isinstance(match, dict), field, "Invalid value: must be an object")
    path = match.get("path")
    if path is not None:
        kind, value = path.get("type", "PathPrefix"), path.get("value", "/")
        _require(
            kind in PATH_TYPES,
            f"{field}.path.type",
            f'Unsupported value: "{kind}": supported values: "Exact", "PathPrefix", "RegularExpression"',
        )
        if kind in ("Exact", "PathPrefix"):
            _require(
                isinstance(value, str) and value.startswith("/"),
                f"{field}.path",
                "Invalid value: \"object\": value must be an absolute path and start with '/'"
                " when type one of ['Exact', 'PathPrefix']",
            )
            _require(
                "//" not in value,
                f"{field}.path",
                "Invalid value: \"object\": must not contain '//' when type one of ['Exact', 'PathPrefix']",
            )
    for key in ("headers", "queryParams"):
        seen: set[str] = set()
        for position, condition in enumerate(_list(match.get(key), f"{field}.{key}", 16)):
            where = f"{field}.{key}[{position}]"
            _require(
                isinstance(condition, dict) and isinstance(condition.get("name"), str),
                f"{where}.name",
                "Required value",
            )
            _require(
                HEADER_NAME.match(condition["name"]) is not None,
                f"{where}.name",
                f"Invalid value: \"{condition['name']}\": {where}.name in body should match '{HEADER_NAME.pattern}'",
            )
            kind = condition.get("type", "Exact")
            _require(
                kind in VALUE_TYPES,
                f"{where}.type",
                f'Unsupported value: "{kind}": supported values: "Exact", "RegularExpression"',
            )
            _require(
                isinstance(condition.get("value"), str) and 0 < len(condition["value"]) <= 4096,
                f"{where}.value",
                "Required value",
            )
            folded = condition["name"].lower() if key == "headers" else condition["name"]
            _require(
                folded not in seen,
                f"{field}.{key}",
                f'Duplicate value: map[string]interface {{}}{{"name":"{condition["name"]}"}}',
            )
            seen.add(folded)
    method = match.get("method")
    if method is not None:
        _require(
            method in METHODS,
            f"{field}.method",
            f'Unsupported value: "{method}": supported values: ' + ", ".join(f'"{m}"' for m in METHODS),
        )


def _check_backend(backend: Any, field: str) -> None:
    _require(
        isinstance(backend, dict) and isinstance(backend.get("name"), str) and backend["name"],
        f"{field}.name",
        "Required value",
    )
    weight = backend.get("weight", 1)
    _require(
        isinstance(weight, int) and not isinstance(weight, bool),
        f"{field}.weight",
        f'Invalid value: "{weight}": {field}.weight in body must be of type integer',
    )
    _require(
        weight >= 0,
        f"{field}.weight",
        f"Invalid value: {weight}: {field}.weight in body should be greater than or equal to 0",
    )
    _require(
        weight <= MAX_WEIGHT,
        f"{field}.weight",
        f"Invalid value: {weight}: {field}.weight in body should be less than or equal to {MAX_WEIGHT}",
    )
    is_service = backend.get("group", "") == "" and backend.get("kind", "Service") == "Service"
    _require(
        not is_service or "port" in backend, field, 'Invalid value: "object": Must have port for Service reference'
    )


def validate_core_service(obj: dict[str, Any]) -> ApiError | None:
    """A core Service without ports is refused, as the API server refuses it."""
    name = str((obj.get("metadata") or {}).get("name", ""))
    spec = obj.get("spec") or {}
    if not spec.get("ports"):
        return ApiError.invalid("core-services", name, "spec.ports", "Required value")
    selector = spec.get("selector")
    if selector is not None and not isinstance(selector, dict):
        return ApiError.invalid("core-services", name, "spec.selector", "Invalid value: must be a map of labels")
    return None

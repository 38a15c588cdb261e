"""Knative's defaulting and validation of a Service, with Knative's own messages.

Mirrors `knative.dev/serving/pkg/apis/serving/v1` (TrafficTarget.SetDefaults, validateTrafficList,
TrafficTarget.Validate) closely enough that a client which handles the real webhook's answers
handles the sandbox's. Pure functions over the parsed object.
"""

from __future__ import annotations

from typing import Any

WEBHOOK = "validation.webhook.serving.knative.dev"
QUALIFIED_NAME_MAX = 63


def default_service(service: dict[str, Any]) -> dict[str, Any]:
    """Knative's defaulting webhook: traffic defaults to 100 % latest; each entry's latestRevision."""
    spec = service.setdefault("spec", {})
    traffic = spec.get("traffic")
    if not traffic:
        spec["traffic"] = [{"latestRevision": True, "percent": 100}]
        return service
    for target in traffic:
        if isinstance(target, dict) and target.get("latestRevision") is None:
            target["latestRevision"] = not target.get("revisionName")
    return service


def validate_service(service: dict[str, Any]) -> list[str]:
    """Knative's field errors for a (defaulted) Service, each as "message: path[, path]"."""
    errors: list[str] = []
    spec = service.get("spec")
    if not isinstance(spec, dict):
        return ["missing field(s): spec"]
    template = spec.get("template")
    containers = template.get("spec", {}).get("containers") if isinstance(template, dict) else None
    if not containers:
        errors.append("missing field(s): spec.template.spec.containers")
    traffic = spec.get("traffic", [])
    if not isinstance(traffic, list):
        return [*errors, "expected a list: spec.traffic"]
    errors.extend(_traffic_errors(traffic))
    return sorted(errors)


def denial_message(errors: list[str]) -> str:
    """What the API server says when the validating webhook denies the request."""
    return f'admission webhook "{WEBHOOK}" denied the request: validation failed: ' + "\n".join(errors)


def _traffic_errors(traffic: list[Any]) -> list[str]:
    errors: list[str] = []
    tags: dict[str, int] = {}
    total = 0
    for index, target in enumerate(traffic):
        where = f"spec.traffic[{index}]"
        if not isinstance(target, dict):
            errors.append(f"expected an object: {where}")
            continue
        errors.extend(_target_errors(target, where))
        percent = target.get("percent")
        if isinstance(percent, int) and not isinstance(percent, bool):
            total += percent
        tag = target.get("tag")
        if tag:
            if tag in tags:
                paths = f"spec.traffic[{index}].tag, spec.traffic[{tags[tag]}].tag"
                errors.append(f'Multiple definitions for "{tag}": {paths}')
            else:
                tags[tag] = index
    if total != 100:
        errors.append(f"Traffic targets sum to {total}, want 100: spec.traffic")
    return errors


def _target_errors(target: dict[str, Any], where: str) -> list[str]:
    errors: list[str] = []
    revision = target.get("revisionName") or ""
    latest = target.get("latestRevision")
    if latest is not None and bool(revision) == bool(latest):
        errors.append(
            f'may not set revisionName "{revision}" when latestRevision is {str(bool(latest)).lower()}:'
            f" {where}.latestRevision"
        )
    if target.get("configurationName"):
        errors.append(f"must not set the field(s): {where}.configurationName")
    elif revision and (len(revision) > QUALIFIED_NAME_MAX or not _qualified(revision)):
        errors.append(f'invalid key name "{revision}": {where}.revisionName')
    percent = target.get("percent")
    if percent is not None:
        if not isinstance(percent, int) or isinstance(percent, bool):
            errors.append(f"expected an integer: {where}.percent")
        elif not 0 <= percent <= 100:
            errors.append(f"expected 0 <= {percent} <= 100: {where}.percent")
    return errors


def _qualified(name: str) -> bool:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    return bool(name) and set(name) <= allowed and name[0].isalnum() and name[-1].isalnum()

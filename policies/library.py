"""Resolving a policy: a named built-in, optionally extended by a document or inline overrides.

The built-ins ship as YAML next to this module and are read once. A policy document may say
`extends: NAME` to start from a built-in; inline overrides (from an API request) are merged onto
the named policy the same way. Merging is deep for mappings and replaces everything else (a
`steps` override replaces the whole list). Every problem is reported by its field path.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import pydantic
import yaml

from policies.errors import FieldProblem, InvalidPolicy
from policies.model import STEP_TAGS, Policy

DEFAULT_POLICY = "default"
EXTENDS_KEY = "extends"


@cache
def _builtin_documents() -> Mapping[str, Mapping[str, Any]]:
    documents: dict[str, Mapping[str, Any]] = {}
    for entry in resources.files("policies").joinpath("builtin").iterdir():
        if entry.name.endswith(".yaml"):
            name = entry.name.removesuffix(".yaml")
            loaded = yaml.safe_load(entry.read_text(encoding="utf-8"))
            if not isinstance(loaded, Mapping):
                raise InvalidPolicy([FieldProblem("", "the file must hold a mapping")], f"built-in {name}")
            documents[name] = loaded
    return documents


SitePolicies = Mapping[str, Mapping[str, Any]]
"""An installation's own policy documents by name (e.g. a ConfigMap's files), beside the built-ins."""


def builtin_names() -> list[str]:
    """Names of the built-in policies, sorted."""
    return sorted(_builtin_documents())


def policy_names(site: SitePolicies | None = None) -> list[str]:
    """Names of the built-in and the site policies, sorted."""
    return sorted({*_builtin_documents(), *(site or {})})


def load_policy(
    name: str | None = None, overrides: Mapping[str, Any] | None = None, site: SitePolicies | None = None
) -> Policy:
    """The named policy (default: `default`) with `overrides` merged on top, validated.

    `site` adds an installation's own documents; they may `extends:` a built-in or each other.
    """
    name = name or DEFAULT_POLICY
    base = _expanded_builtin(name, field="policy", site=site or {})
    source = f"policy {name!r}" if not overrides else f"policy {name!r} with overrides"
    return _validate({**_layered(base, overrides or {}), "name": name}, source)


def check_site_policies(site: SitePolicies) -> dict[str, Policy]:
    """Every site policy resolved; a name that shadows a built-in or any invalid field is refused."""
    resolved = {}
    for name in sorted(site):
        if name in _builtin_documents():
            problem = FieldProblem("name", f"{name!r} is a built-in policy; give the site policy another name")
            raise InvalidPolicy([problem], f"site policy {name!r}")
        try:
            resolved[name] = load_policy(name, site=site)
        except InvalidPolicy as exc:
            raise InvalidPolicy(exc.problems, f"site policy {name!r}") from exc
    return resolved


def parse_policy_document(document: object, source: str = "policy document") -> Policy:
    """Validate a policy written by a user (a file's parsed YAML), honouring `extends: NAME`."""
    if not isinstance(document, Mapping):
        raise InvalidPolicy([FieldProblem("", "a policy must be a mapping of fields")], source)
    data = dict(document)
    parent = data.pop(EXTENDS_KEY, None)
    if parent is not None:
        if not isinstance(parent, str):
            raise InvalidPolicy([FieldProblem(EXTENDS_KEY, "must name a built-in policy")], source)
        data = _layered({**_expanded_builtin(parent, field=EXTENDS_KEY), "name": parent}, data)
    return _validate(data, source)


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`overrides` on top of `base`: mappings merge key by key, any other value replaces."""
    merged = dict(base)
    for key, value in overrides.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def _layered(base: Mapping[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    """`layer` merged onto `base`; a layer that sets `step_min_duration` alone means fixed steps of
    that length, as it did before steps could end early, whatever `step_max_duration` the base has."""
    if "step_min_duration" in layer and "step_max_duration" not in layer:
        layer = {**layer, "step_max_duration": layer["step_min_duration"]}
    return deep_merge(base, layer)


def _expanded_builtin(
    name: str, field: str, seen: tuple[str, ...] = (), site: SitePolicies | None = None
) -> dict[str, Any]:
    documents = {**(site or {}), **_builtin_documents()}
    if name not in documents:
        known = ", ".join(sorted(documents))
        what = "policies are" if site else "built-ins are"
        raise InvalidPolicy([FieldProblem(field, f"unknown policy {name!r}; {what}: {known}")])
    if name in seen:
        raise InvalidPolicy([FieldProblem(EXTENDS_KEY, f"cycle: {' -> '.join((*seen, name))}")])
    data = dict(documents[name])
    data.pop("name", None)
    parent = data.pop(EXTENDS_KEY, None)
    if parent is not None and not isinstance(parent, str):
        raise InvalidPolicy([FieldProblem(EXTENDS_KEY, "must name a policy")])
    if isinstance(parent, str):
        return _layered(_expanded_builtin(parent, EXTENDS_KEY, (*seen, name), site), data)
    return data


def _validate(data: Mapping[str, Any], source: str) -> Policy:
    try:
        return Policy.model_validate(dict(data))
    except pydantic.ValidationError as exc:
        raise InvalidPolicy([_problem(error) for error in exc.errors()], source) from exc


def field_path(location: tuple[int | str, ...]) -> str:
    """("steps", 2) -> "steps[2]"; ("guardrails", "max_p99_ms") -> "guardrails.max_p99_ms"."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _problem(error: Mapping[str, Any]) -> FieldProblem:
    location = tuple(error["loc"])
    if location[:1] == ("steps",) and len(location) > 2 and location[2] in STEP_TAGS:
        location = location[:2] + location[3:]  # a step's union tag: the document has no such level
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field"
        suggestion = _closest_field(location)
        if suggestion:
            message += f"; did you mean {suggestion!r}?"
    return FieldProblem(field_path(location), message)


def _closest_field(location: tuple[int | str, ...]) -> str | None:
    """The known field nearest to a misspelt one, looked up in the model at that path."""
    model: type[pydantic.BaseModel] = Policy
    for part in location[:-1]:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[str(part)].annotation if str(part) in model.model_fields else None
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = next((c for c in candidates if isinstance(c, type) and issubclass(c, pydantic.BaseModel)), None)
        if nested is None:
            return None
        model = nested
    matches = difflib.get_close_matches(str(location[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return matches[0] if matches else None

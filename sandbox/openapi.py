"""The OpenAPI v3 discovery documents kubectl reads before it writes, and the `fieldValidation`
the API server then applies.

`kubectl apply` (and `create`, `replace`) validate by default: kubectl first asks
`/openapi/v3` whether the API server validates fields itself (a PATCH operation for the
object's group-version-kind that takes the `fieldValidation` query parameter). When it does,
kubectl sends `?fieldValidation=Strict` and leaves the checking to the server; when it cannot
find out, it falls back to downloading `/openapi/v2` as protobuf, which the sandbox does not
serve. So the sandbox describes its Knative resources as a real API server describes CRDs since
Kubernetes 1.27, and checks unknown fields as a CRD's structural schema does:
`Strict` refuses them (400, "strict decoding error"), `Warn` answers with a `Warning` header.

The field lists are those of Knative's CRDs that autocanary and the walkthroughs use; below
`spec.template` every field is allowed (Knative's schema there is a whole PodSpec).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sandbox.store import GROUP, KINDS, VERSION

_GV_PATH = f"apis/{GROUP}/{VERSION}"
_FIELD_VALIDATION = {
    "name": "fieldValidation",
    "in": "query",
    "description": "How the server treats unknown or duplicate fields: Ignore, Warn or Strict.",
    "schema": {"type": "string", "uniqueItems": True},
}
_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml")

KNOWN_FIELDS: dict[str, frozenset[str]] = {
    "": frozenset({"apiVersion", "kind", "metadata", "spec", "status"}),
    "spec": frozenset({"template", "traffic"}),
    "spec.traffic[]": frozenset({"tag", "revisionName", "configurationName", "latestRevision", "percent", "url"}),
}
"""Service fields by path; a path not listed here accepts anything below it."""

FIELD_VALIDATION_DIRECTIVES = ("Ignore", "Warn", "Strict")


def _schema_name(kind: str) -> str:
    return f"dev.knative.serving.{VERSION}.{kind}"


def _gvk(kind: str) -> dict[str, str]:
    return {"group": GROUP, "version": VERSION, "kind": kind}


def _operation(kind: str, action: str, body_types: tuple[str, ...] = ()) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": f"{action}{kind}",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(kind),
        "responses": {"200": {"description": "OK"}},
    }
    if body_types:
        operation["parameters"] = [_FIELD_VALIDATION]
        schema = {"$ref": f"#/components/schemas/{_schema_name(kind)}"}
        operation["requestBody"] = {"content": {media: {"schema": schema} for media in body_types}}
    return operation


def group_version_document() -> dict[str, Any]:
    """The `/openapi/v3/apis/serving.knative.dev/v1` document: paths with their operations and schemas."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for plural, kind in KINDS.items():
        writable = plural == "services"
        item: dict[str, Any] = {"get": _operation(kind, "get")}
        if writable:
            item["put"] = _operation(kind, "put", ("application/json",))
            item["patch"] = _operation(kind, "patch", _PATCH_TYPES)
        item["delete"] = _operation(kind, "delete")
        paths[f"/{_GV_PATH}/namespaces/{{namespace}}/{plural}/{{name}}"] = item
        collection: dict[str, Any] = {"get": _operation(kind, "list")}
        if writable:
            collection["post"] = _operation(kind, "post", ("application/json",))
        paths[f"/{_GV_PATH}/namespaces/{{namespace}}/{plural}"] = collection
        schemas[_schema_name(kind)] = {
            "type": "object",
            "x-kubernetes-group-version-kind": [_gvk(kind)],
            "properties": {
                field: {"type": "string" if field in ("apiVersion", "kind") else "object"} for field in KNOWN_FIELDS[""]
            },
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


_DOCUMENT = json.dumps(group_version_document(), separators=(",", ":")).encode()
_HASH = hashlib.sha512(_DOCUMENT).hexdigest()[:128].upper()


def group_version_bytes() -> bytes:
    return _DOCUMENT


def root_document() -> dict[str, Any]:
    """`/openapi/v3`: where each group-version's document is, with a content hash as the server gives."""
    return {"paths": {_GV_PATH: {"serverRelativeURL": f"/openapi/v3/{_GV_PATH}?hash={_HASH}"}}}


def unknown_fields(service: Any) -> list[str]:
    """The dotted paths of the fields a Knative Service's schema does not know, in document order."""
    found: list[str] = []
    if not isinstance(service, dict):
        return found
    _collect(service, "", found)
    spec = service.get("spec")
    if isinstance(spec, dict):
        _collect(spec, "spec", found)
        traffic = spec.get("traffic")
        for index, entry in enumerate(traffic if isinstance(traffic, list) else []):
            if isinstance(entry, dict):
                _collect(entry, "spec.traffic[]", found, shown=f"spec.traffic[{index}]")
    return found


def _collect(obj: dict[str, Any], path: str, found: list[str], shown: str | None = None) -> None:
    prefix = shown if shown is not None else path
    found.extend(f"{prefix}.{key}" if prefix else key for key in obj if key not in KNOWN_FIELDS[path])

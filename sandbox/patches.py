"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902), as the Kubernetes API server applies them.

Custom resources such as Knative Services accept exactly these two patch types; strategic merge
patch is refused with 415 (see `sandbox.apiserver`).
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    """The patch cannot be applied; the message says why, in the API server's words."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: mappings merge recursively, `null` deletes, everything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(document: Any, operations: Any) -> Any:
    """RFC 6902: apply add/remove/replace/move/copy/test operations in order, atomically."""
    if not isinstance(operations, list):
        raise PatchError("json patch must be a list of operations")
    result = copy.deepcopy(document)
    for index, operation in enumerate(operations):
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise PatchError(f"operation {index}: needs 'op' and 'path'")
        result = _apply(result, operation)
    return result


def _apply(document: Any, operation: dict[str, Any]) -> Any:
    op, path = operation["op"], operation["path"]
    if op == "add":
        return _set(document, path, _value(operation), insert=True)
    if op == "replace":
        _get(document, path)  # must exist
        return _set(document, path, _value(operation), insert=False)
    if op == "remove":
        return _remove(document, path)
    if op == "test":
        if _get(document, path) != _value(operation):
            raise PatchError(f"testing value {path} failed")
        return document
    if op in ("move", "copy"):
        source = operation.get("from")
        if not isinstance(source, str):
            raise PatchError(f"{op} operation needs 'from'")
        value = copy.deepcopy(_get(document, source))
        if op == "move":
            document = _remove(document, source)
        return _set(document, path, value, insert=True)
    raise PatchError(f"unexpected op {op!r}")


def _value(operation: dict[str, Any]) -> Any:
    if "value" not in operation:
        raise PatchError(f"{operation['op']} operation does not apply: value is missing")
    return copy.deepcopy(operation["value"])


def _tokens(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"path {path!r} must start with '/'")
    return [token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/")]


def _get(document: Any, path: str) -> Any:
    current = document
    for token in _tokens(path):
        current = _child(current, token, path)
    return current


def _child(container: Any, token: str, path: str) -> Any:
    if isinstance(container, dict):
        if token not in container:
            raise PatchError(f"path {path!r} does not exist")
        return container[token]
    if isinstance(container, list):
        position = _index(token, len(container) - 1, path)
        return container[position]
    raise PatchError(f"path {path!r} does not exist")


def _index(token: str, maximum: int, path: str) -> int:
    if not token.isdigit():
        raise PatchError(f"path {path!r}: {token!r} is not an array index")
    position = int(token)
    if position > maximum:
        raise PatchError(f"path {path!r}: index {position} out of range")
    return position


def _set(document: Any, path: str, value: Any, insert: bool) -> Any:
    tokens = _tokens(path)
    if not tokens:
        return value
    parent = _get(document, "/" + "/".join(t.replace("~", "~0").replace("/", "~1") for t in tokens[:-1]))
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif insert:
            parent.insert(_index(last, len(parent), path), value)
        else:
            parent[_index(last, len(parent) - 1, path)] = value
    else:
        raise PatchError(f"path {path!r} does not exist")
    return document


def _remove(document: Any, path: str) -> Any:
    tokens = _tokens(path)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _get(document, "/" + "/".join(t.replace("~", "~0").replace("/", "~1") for t in tokens[:-1]))
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(last, len(parent) - 1, path)]
    else:
        raise PatchError(f"path {path!r} does not exist")
    return document

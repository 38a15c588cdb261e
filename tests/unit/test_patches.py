"""JSON merge patch and JSON patch as the sandbox API server applies them."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.patches import PatchError, json_patch, merge_patch

DOC: dict[str, Any] = {
    "metadata": {"name": "s", "labels": {"a": "1"}},
    "spec": {"traffic": [{"p": 1}, {"p": 2}]},
}


def test_merge_patch_merges_maps_replaces_lists_and_deletes_nulls() -> None:
    patched = merge_patch(DOC, {"metadata": {"labels": {"a": None, "b": "2"}}, "spec": {"traffic": [{"p": 3}]}})
    assert patched == {"metadata": {"name": "s", "labels": {"b": "2"}}, "spec": {"traffic": [{"p": 3}]}}
    assert DOC["spec"]["traffic"] == [{"p": 1}, {"p": 2}]  # the input is untouched


def test_json_patch_operations() -> None:
    patched = json_patch(
        DOC,
        [
            {"op": "test", "path": "/metadata/name", "value": "s"},
            {"op": "replace", "path": "/spec/traffic/0/p", "value": 9},
            {"op": "add", "path": "/spec/traffic/-", "value": {"p": 4}},
            {"op": "remove", "path": "/spec/traffic/1"},
            {"op": "copy", "from": "/metadata/labels", "path": "/metadata/annotations"},
            {"op": "move", "from": "/metadata/labels/a", "path": "/metadata/labels/b"},
        ],
    )
    assert patched["spec"]["traffic"] == [{"p": 9}, {"p": 4}]
    assert patched["metadata"]["labels"] == {"b": "1"}
    assert patched["metadata"]["annotations"] == {"a": "1"}


@pytest.mark.parametrize(
    "operations",
    [
        [{"op": "test", "path": "/metadata/name", "value": "other"}],
        [{"op": "replace", "path": "/spec/missing", "value": 1}],
        [{"op": "remove", "path": "/spec/traffic/5"}],
        [{"op": "frobnicate", "path": "/spec"}],
        [{"op": "add", "path": "spec"}],
        {"op": "add"},
    ],
    ids=["test-fails", "replace-missing", "remove-out-of-range", "unknown-op", "bad-path", "not-a-list"],
)
def test_json_patch_refuses_what_cannot_apply(operations: Any) -> None:
    with pytest.raises(PatchError):
        json_patch(DOC, operations)

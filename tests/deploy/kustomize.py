"""Render a kustomization: `kubectl kustomize` when it is installed, else a small Python composer.

The composer implements exactly the kustomize features `deploy/` uses (resources from files and
directories, `namespace`, `labels` pairs on metadata, `images`, and strategic-merge `patches`
whose lists of named items merge by `name`); it refuses any other field rather than render
something kubectl would not. Where kubectl exists, a test checks that both give the same objects.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}

Object = dict[str, Any]


def kubectl() -> str | None:
    return shutil.which("kubectl")


def render(directory: Path) -> list[Object]:
    """The overlay's objects, by kubectl when present (the reference), else by `compose`."""
    binary = kubectl()
    if binary is None:
        return compose(directory)
    rendered = subprocess.run(  # noqa: S603 (fixed arguments)
        [binary, "kustomize", str(directory)], check=True, capture_output=True, text=True, timeout=60
    )
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def compose(directory: Path) -> list[Object]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise ValueError(f"{directory}: kustomization fields this composer does not implement: {sorted(unknown)}")
    objects: list[Object] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        objects.extend(compose(path) if path.is_dir() else _documents(path))
    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise ValueError(f"{directory}: only `patches: - path:` (strategic merge) is implemented")
        for document in _documents(directory / patch["path"]):
            target = _find(objects, document)
            objects[objects.index(target)] = strategic_merge(target, document)
    namespace = spec.get("namespace")
    for obj in objects:
        if namespace and obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace
        for group in spec.get("labels", []):
            if set(group) != {"pairs"}:
                raise ValueError(f"{directory}: only `labels: - pairs:` is implemented")
            obj["metadata"].setdefault("labels", {}).update(group["pairs"])
        for image in spec.get("images", []):
            _retag(obj, image)
    return objects


def strategic_merge(base: Any, patch: Any) -> Any:
    """Maps merge key by key; lists of maps with `name` merge by name; anything else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(patch, list) and all(_named(i) for i in [*base, *patch]):
        merged_list = list(base)
        for item in patch:
            names = [existing["name"] for existing in merged_list]
            if item["name"] in names:
                index = names.index(item["name"])
                merged_list[index] = strategic_merge(merged_list[index], item)
            else:
                merged_list.append(item)
        return merged_list
    return patch


def _named(item: Any) -> bool:
    return isinstance(item, dict) and "name" in item


def _documents(path: Path) -> list[Object]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _find(objects: list[Object], patch: Object) -> Object:
    for obj in objects:
        if (obj["kind"], obj["metadata"]["name"]) == (patch["kind"], patch["metadata"]["name"]):
            return obj
    raise ValueError(f"patch target {patch['kind']}/{patch['metadata']['name']} is not among the resources")


def _retag(obj: Object, image: dict[str, str]) -> None:
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    for container in [*pod.get("containers", []), *pod.get("initContainers", [])]:
        if container.get("image", "").split(":")[0] == image["name"]:
            name = image.get("newName", image["name"])
            tag = image.get("newTag")
            container["image"] = f"{name}:{tag}" if tag else name

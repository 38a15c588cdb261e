"""API discovery, as kubectl and the kubernetes client read it: `/apis` lists every group the
sandbox serves, `/apis/{group}/{version}` its resources with the verbs, short names and
categories their CRDs (or built-in types) declare, so `kubectl get ksvc` or `kubectl get vs`
work as against a cluster."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from sandbox.resources import GROUP_VERSIONS, RESOURCES, of_group


def add_discovery(app: FastAPI) -> None:
    @app.get("/apis")
    async def groups() -> dict[str, Any]:
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g) for g in _groups()]}

    for group, version in GROUP_VERSIONS:
        _add_group(app, group, version)


def _groups() -> list[str]:
    return list(dict.fromkeys(group for group, _ in GROUP_VERSIONS))


def _versions(group: str) -> list[dict[str, str]]:
    return [{"groupVersion": f"{group}/{v}", "version": v} for g, v in GROUP_VERSIONS if g == group]


def _group(group: str) -> dict[str, Any]:
    versions = _versions(group)
    return {"name": group, "versions": versions, "preferredVersion": versions[0]}


def _add_group(app: FastAPI, group: str, version: str) -> None:
    @app.get(f"/apis/{group}")
    async def api_group() -> dict[str, Any]:
        return {"kind": "APIGroup", "apiVersion": "v1", **_group(group)}

    @app.get(f"/apis/{group}/{version}")
    async def resources() -> dict[str, Any]:
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}",
            "resources": [
                {
                    "name": resource.plural,
                    "singularName": resource.kind.lower(),
                    "namespaced": True,
                    "kind": resource.kind,
                    "verbs": resource.verbs,
                    "shortNames": list(resource.short_names),
                    "categories": list(resource.categories),
                }
                for resource in (RESOURCES[key] for key in of_group(group, version).values())
            ],
        }

"""Server-side printing, as the API server does it for `kubectl get`: a `meta.k8s.io/v1` Table.

kubectl asks for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints the columns
the server names. For Knative's resources these are the `additionalPrinterColumns` of Knative's
CRDs (Services: URL, LATESTCREATED, LATESTREADY, READY, REASON; Revisions: CONFIG NAME,
GENERATION, READY, REASON); for Istio's those of its CRDs (VirtualServices: GATEWAYS, HOSTS;
DestinationRules: HOST) and for Deployments kubectl's (READY, UP-TO-DATE, AVAILABLE), so
`kubectl get ksvc` or `kubectl get vs` against the sandbox reads as against a cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

Column = tuple[str, str, Callable[[dict[str, Any]], Any]]


def _status(obj: dict[str, Any], field: str) -> Any:
    return (obj.get("status") or {}).get(field, "")


def _condition(obj: dict[str, Any], kind: str, field: str) -> str:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return str(condition.get(field, ""))
    return ""


COLUMNS: dict[str, Sequence[Column]] = {
    "services": (
        ("URL", "string", lambda o: _status(o, "url")),
        ("LatestCreated", "string", lambda o: _status(o, "latestCreatedRevisionName")),
        ("LatestReady", "string", lambda o: _status(o, "latestReadyRevisionName")),
        ("Ready", "string", lambda o: _condition(o, "Ready", "status")),
        ("Reason", "string", lambda o: _condition(o, "Ready", "reason")),
    ),
    "revisions": (
        (
            "Config Name",
            "string",
            lambda o: (o["metadata"].get("labels") or {}).get("serving.knative.dev/configuration", ""),
        ),
        (
            "Generation",
            "string",
            lambda o: (o["metadata"].get("labels") or {}).get("serving.knative.dev/configurationGeneration", ""),
        ),
        ("Ready", "string", lambda o: _condition(o, "Ready", "status")),
        ("Reason", "string", lambda o: _condition(o, "Ready", "reason")),
    ),
    # The printer columns of Istio's CRDs and of `kubectl get deployments`.
    "virtualservices": (
        ("Gateways", "string", lambda o: ", ".join(map(str, (o.get("spec") or {}).get("gateways") or []))),
        ("Hosts", "string", lambda o: ", ".join(map(str, (o.get("spec") or {}).get("hosts") or []))),
    ),
    "destinationrules": (("Host", "string", lambda o: (o.get("spec") or {}).get("host", "")),),
    "deployments": (
        (
            "Ready",
            "string",
            lambda o: f"{_status(o, 'readyReplicas') or 0}/{(o.get('spec') or {}).get('replicas', 1)}",
        ),
        ("Up-to-date", "integer", lambda o: _status(o, "updatedReplicas") or 0),
        ("Available", "integer", lambda o: _status(o, "availableReplicas") or 0),
    ),
    # The Gateway API CRD's printer column, and kubectl's for core Services.
    "httproutes": (
        ("Hostnames", "string", lambda o: ", ".join(map(str, (o.get("spec") or {}).get("hostnames") or []))),
    ),
    "core-services": (
        ("Type", "string", lambda o: (o.get("spec") or {}).get("type", "ClusterIP")),
        (
            "Ports",
            "string",
            lambda o: ",".join(
                f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in (o.get("spec") or {}).get("ports") or []
            ),
        ),
        (
            "Selector",
            "string",
            lambda o: ",".join(f"{k}={v}" for k, v in ((o.get("spec") or {}).get("selector") or {}).items()),
        ),
    ),
}


def wants_table(accept: str | None) -> bool:
    return bool(accept) and "as=Table" in (accept or "")


def as_table(plural: str, items: Sequence[dict[str, Any]], resource_version: str) -> dict[str, Any]:
    columns: list[Column] = [("Name", "string", lambda o: o["metadata"]["name"]), *COLUMNS.get(plural, ())]
    definitions = [
        {"name": name, "type": kind, "format": "name" if name == "Name" else "", "description": "", "priority": 0}
        for name, kind, _ in columns
    ]
    definitions.append({"name": "Age", "type": "date", "format": "", "description": "", "priority": 0})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": [
            {
                "cells": [*(str(cell(item) or "") for _, _, cell in columns), _age(item)],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item["metadata"],
                },
            }
            for item in items
        ],
    }


def _age(item: dict[str, Any]) -> str:
    created = item["metadata"].get("creationTimestamp")
    if not created:
        return ""
    seconds = int((datetime.now(UTC) - datetime.fromisoformat(str(created).replace("Z", "+00:00"))).total_seconds())
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m"

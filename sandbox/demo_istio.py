"""The demo's Istio chapter: the KubeSphere canary guide by hand, then autocanary doing it.

Two Deployments `reviews-v1` and `reviews-v2`, a DestinationRule with subsets `v1` and `v2` by
their `version` label, and a VirtualService for host `reviews` at 50/50, as the guide sets it by
hand; 20 requests show both versions. Then the VirtualService goes back to v1 100 % and the
canary is registered through the API (`target.kind: istio`): autocanary moves the route's
weights step by step on Istio's metrics and promotes v2. Through HTTP only, like the rest of
the demo.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console

from sandbox.loadgen import sample
from sandbox.processes import BackgroundLoad

if TYPE_CHECKING:
    from sandbox.demo import Demo

NAMESPACE, HOST = "default", "reviews.default"
ISTIO = "/apis/networking.istio.io/v1/namespaces/default"
console = Console(highlight=False)


def _deployment(version: str) -> dict[str, Any]:
    labels = {"app": "reviews", "version": version}
    env = [{"name": "TARGET", "value": f"reviews {version}"}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"reviews-{version}", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "reviews", "env": env}]}},
        },
    }


def _route(v1: int, v2: int) -> list[dict[str, Any]]:
    return [
        {
            "name": "primary",
            "route": [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": v1},
                {"destination": {"host": "reviews", "subset": "v2"}, "weight": v2},
            ],
        }
    ]


def _show(demo: Demo, label: str) -> None:
    bodies = asyncio.run(sample(demo.endpoints.gateway, HOST, 20))
    counts = {body: bodies.count(body) for body in sorted(set(bodies))}
    console.print(f"    {label}20 requests: " + ", ".join(f"{body} x{count}" for body, count in counts.items()))


def by_hand(demo: Demo) -> None:
    """The guide's objects, and its 50/50 split set by hand."""
    cluster = demo.kube_root
    for version in ("v1", "v2"):
        cluster.post("/apis/apps/v1/namespaces/default/deployments", json=_deployment(version)).raise_for_status()
    rule = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews"},
        "spec": {"host": "reviews", "subsets": [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")]},
    }
    cluster.post(f"{ISTIO}/destinationrules", json=rule).raise_for_status()
    service = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews"},
        "spec": {"hosts": ["reviews"], "http": _route(50, 50)},
    }
    cluster.post(f"{ISTIO}/virtualservices", json=service).raise_for_status()
    deadline = time.monotonic() + 30
    while not all(_available(demo, f"reviews-{v}") for v in ("v1", "v2")):
        if time.monotonic() > deadline:
            raise TimeoutError("timed out waiting for reviews-v1 and reviews-v2 to be available")
        time.sleep(0.1)
    console.print("reviews-v1, reviews-v2, DestinationRule reviews (subsets v1, v2), VirtualService reviews at 50/50")
    _show(demo, "by hand, 50/50: ")
    patch = json.dumps({"spec": {"http": _route(100, 0)}})
    headers = {"Content-Type": "application/merge-patch+json"}
    cluster.patch(f"{ISTIO}/virtualservices/reviews", content=patch, headers=headers).raise_for_status()
    _show(demo, "back to v1 100 %: ")


def split(demo: Demo) -> dict[str, int]:
    """The managed route's weights, by subset."""
    found = demo.kube_root.get(f"{ISTIO}/virtualservices/reviews").json()
    route = next(r for r in found["spec"]["http"] if r.get("name") == "primary")
    return {d["destination"]["subset"]: d["weight"] for d in route["route"] if d.get("weight")}


def _available(demo: Demo, name: str) -> bool:
    found = demo.kube_root.get(f"/apis/apps/v1/namespaces/default/deployments/{name}")
    return found.status_code == 200 and int(found.json().get("status", {}).get("availableReplicas") or 0) > 0


def with_autocanary(demo: Demo) -> dict[str, Any]:
    """The same canary, registered as an Istio rollout and followed until it ends."""
    load = BackgroundLoad(demo.endpoints.gateway, [HOST], rate=100, max_seconds=120)
    try:
        target = {
            "kind": "istio",
            "namespace": NAMESPACE,
            "virtual_service": "reviews",
            "stable_subset": "v1",
            "canary_subset": "v2",
        }
        answer = demo.pipeline.post("/v1/rollouts", json={"target": target, "policy": "demo"})
        if answer.status_code != 201:
            raise RuntimeError(f"registering the Istio canary failed: {answer.status_code} {answer.text}")
        rollout = answer.json()
        console.print(
            f"registered rollout [bold]{rollout['id']}[/]: subset v2 replacing v1 on VirtualService reviews"
            f" (route {rollout['target']['route']}, policy demo, measured with Istio's metrics)"
        )

        def show(event: dict[str, Any]) -> None:
            if event["kind"] in ("step_advanced", "promoted"):
                _show(demo, "")

        return demo.follow(rollout["id"], show)
    finally:
        load.stop()

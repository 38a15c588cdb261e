"""`autocanary demo`: the Knative canary guide, automated, on a machine of its own.

Starts a private Redis, the sandbox cluster with its Prometheus, the autocanary API, two workers
and the scheduler, then plays the seed scenario through the public API only:

1. `helloworld-go` v1 (TARGET=World), then v2 (TARGET=Knative) registered with policy `demo`:
   promoted step by step, with 20 gateway responses shown after each step like the guide's curl loop;
2. v3 with a 5 % error rate: rolled back automatically, with the verdict that decided it;
3. v4: aborted by hand through the API with an on-call token;
4. v5 tried at its Knative tag URL first (a tag step: no user reaches it), then promoted;
5. Istio (sandbox/demo_istio.py): the KubeSphere guide's reviews-v1 and reviews-v2 at 50/50 by
   hand, then v2 registered as an Istio canary and promoted on Istio's metrics.

It ends with a summary table, stops everything it started and exits 0 when the four cases
ended as they should. Everything goes through HTTP or `autocanary` commands: the demo imports
nothing of the product.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from sandbox import demo_istio
from sandbox.cluster import Endpoints
from sandbox.loadgen import sample
from sandbox.processes import BackgroundLoad, Processes, RedisProcess, SandboxProcess, stop_on_sigterm
from sandbox.prometheus import free_port

SERVICE, NAMESPACE = "helloworld-go", "default"
HOST = f"{SERVICE}.{NAMESPACE}.example.com"
PIPELINE, ONCALL, VIEWER = "demo-pipeline-token", "demo-oncall-token", "demo-viewer-token"
console = Console(highlight=False)


class Demo:
    def __init__(self, base: Path, endpoints: Endpoints, api: str) -> None:
        self.base = base
        self.endpoints = endpoints
        self.kube = httpx.Client(base_url=f"{endpoints.apiserver}/apis/serving.knative.dev/v1/namespaces/{NAMESPACE}")
        self.kube_root = httpx.Client(base_url=endpoints.apiserver)
        self.pipeline = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {PIPELINE}"}, timeout=30)
        self.oncall = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {ONCALL}"}, timeout=30)

    # --- the cluster, as kubectl would change it -------------------------------------------------

    def deploy(self, version: int, target: str, pin: str | None = None, **env: str) -> str:
        """Create or update helloworld-go; with `pin`, keep 100 % on that revision (as the guide does)."""
        variables = [{"name": "TARGET", "value": target}] + [{"name": k, "value": v} for k, v in env.items()]
        template = {"spec": {"containers": [{"image": "ghcr.io/knative/helloworld-go:latest", "env": variables}]}}
        revision = f"{SERVICE}-{version:05d}"
        if version == 1:
            body = {
                "apiVersion": "serving.knative.dev/v1",
                "kind": "Service",
                "metadata": {"name": SERVICE},
                "spec": {"template": template},
            }
            self.kube.post("/services", json=body).raise_for_status()
        else:
            patch = {"spec": {"template": template, "traffic": [{"revisionName": pin, "percent": 100}]}}
            headers = {"Content-Type": "application/merge-patch+json"}
            self.kube.patch(f"/services/{SERVICE}", content=json.dumps(patch), headers=headers).raise_for_status()
        _wait(lambda: self._ready(revision), 30, f"{revision} Ready")
        return revision

    def _ready(self, revision: str) -> bool:
        found = self.kube.get(f"/revisions/{revision}")
        conditions = found.json().get("status", {}).get("conditions", []) if found.status_code == 200 else []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def split(self) -> dict[str, int]:
        traffic = self.kube.get(f"/services/{SERVICE}").json()["status"].get("traffic", [])
        return {t["revisionName"]: t["percent"] for t in traffic if t.get("percent")}

    # --- autocanary, through its API ----------------------------------------------------------

    def register(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "namespace": NAMESPACE,
            "service": SERVICE,
            "policy": "demo",
            "labels": {"pipeline": "demo"},
        }
        if overrides:
            body["policy_overrides"] = overrides
        answer = self.pipeline.post("/v1/rollouts", json=body)
        if answer.status_code != 201:
            raise RuntimeError(f"registering failed: {answer.status_code} {answer.text}")
        rollout: dict[str, Any] = answer.json()
        console.print(
            f"registered rollout [bold]{rollout['id']}[/]: {rollout['canary_revision']} replacing"
            f" {rollout['stable_revision']} (policy demo)"
        )
        return rollout

    def follow(self, rollout_id: str, on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Print the rollout's events as they happen (Server-Sent Events) until it ends."""
        with self.pipeline.stream(
            "GET", f"/v1/rollouts/{rollout_id}/events", headers={"Accept": "text/event-stream"}, timeout=None
        ) as stream:
            kind = ""
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: ") and kind != "end":
                    event = json.loads(line.removeprefix("data: "))
                    if kind != "verdict" or event["data"].get("outcome") == "fail":
                        console.print(f"  [dim]{event['at'][11:19]}[/] [bold]{kind}[/] {event['message']}")
                    if on_event:
                        on_event(event)
                elif kind == "end":
                    break
        final: dict[str, Any] = self.pipeline.get(f"/v1/rollouts/{rollout_id}").json()
        return final

    def show_responses(self, event: dict[str, Any]) -> None:
        if event["kind"] in ("step_advanced", "promoted"):
            bodies = asyncio.run(sample(self.endpoints.gateway, HOST, 20))
            counts = {body: bodies.count(body) for body in sorted(set(bodies))}
            console.print("    20 requests: " + ", ".join(f"{body} x{count}" for body, count in counts.items()))


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def run(summary_file: Path | None = None) -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="autocanary-demo-") as folder:
        base = Path(folder)
        console.rule("autocanary demo")
        sandbox = SandboxProcess(base / "sandbox", "--reconcile-delay", "0.1")
        (base / "redis").mkdir()
        redis = RedisProcess(base / "redis")
        processes: Processes | None = None
        try:
            endpoints = sandbox.start()
            redis.start()
            port = free_port()
            env = {
                "AUTOCANARY_REDIS_URL": redis.url,
                "AUTOCANARY_KUBECONFIG": endpoints.kubeconfig,
                "AUTOCANARY_PROMETHEUS_URL": endpoints.prometheus or "",
                "AUTOCANARY_TOKENS": f"pipeline:deployer:{PIPELINE},on-call:operator:{ONCALL},wall:viewer:{VIEWER}",
                "AUTOCANARY_METRICS_LAG_SECONDS": "1",
                "AUTOCANARY_METRICS_MIN_WINDOW_SECONDS": "2",
            }
            processes = Processes(env, base)
            processes.start("api", ["api", "--port", str(port)])
            processes.start("worker-1", ["worker"])
            processes.start("worker-2", ["worker"])
            processes.start("scheduler", ["scheduler"])
            api = f"http://127.0.0.1:{port}"
            _wait(lambda: _up(f"{api}/healthz"), 30, "the API")
            console.print(f"sandbox, Prometheus, Redis, API ({api}), two workers and the scheduler are up")
            console.print(
                f"web dashboard: [bold]{api}/ui[/] while the demo runs; sign in with {ONCALL} (operator)"
                f" or {VIEWER} (viewer)"
            )
            demo = Demo(base, endpoints, api)
            results = _scenario(demo, lambda: BackgroundLoad(endpoints.gateway, [HOST], rate=100, max_seconds=170))
        finally:
            if processes:
                processes.stop_all()
            redis.stop()
            sandbox.stop()
    table = Table("case", "revision", "expected", "ended", "why", title="summary")
    for case in results:
        ok = "[green]" if case["phase"] == case["expected"] else "[red]"
        table.add_row(case["case"], case["revision"], case["expected"], f"{ok}{case['phase']}[/]", case["reason"][:90])
    console.print(table)
    console.print(f"demo finished in {time.monotonic() - started:.0f}s; everything it started is stopped")
    if summary_file:
        summary_file.write_text(json.dumps(results, indent=2))
    return 0 if all(case["phase"] == case["expected"] for case in results) else 1


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _scenario(demo: Demo, start_load: Callable[[], BackgroundLoad]) -> list[dict[str, Any]]:
    results = []
    console.rule("1. helloworld-go v1 (World), then v2 (Knative) as a canary")
    v1 = demo.deploy(1, "World")
    load = start_load()
    try:
        v2 = demo.deploy(2, "Knative", pin=v1)
        rollout = demo.register()
        final = demo.follow(rollout["id"], demo.show_responses)
        results.append(_result("promote", v2, "succeeded", final, demo))

        console.rule("2. v3 with a 5 % error rate")
        v3 = demo.deploy(3, "v3", pin=v2, SANDBOX_ERROR_RATE="0.05")
        rollout = demo.register()
        final = demo.follow(rollout["id"])
        results.append(_result("roll back", v3, "rolled_back", final, demo))

        console.rule("3. v4, aborted by the on-call engineer")
        v4 = demo.deploy(4, "v4", pin=v2)
        rollout = demo.register()

        def abort_when_serving(event: dict[str, Any]) -> None:
            if event["kind"] == "step_advanced":
                answer = demo.oncall.post(
                    f"/v1/rollouts/{rollout['id']}/abort", json={"reason": "pager: checkout latency"}
                )
                console.print(f"  on-call aborts: {answer.status_code} {answer.json().get('actor', answer.text)}")

        final = demo.follow(rollout["id"], abort_when_serving)
        results.append(_result("abort", v4, "aborted", final, demo))

        console.rule("4. v5, tried at its tag URL before any user reaches it")
        v5 = demo.deploy(5, "v5", pin=v2)
        rollout = demo.register({"steps": [{"match": {"tag": "canary"}}, 50]})
        tag_host = f"canary-{SERVICE}.{NAMESPACE}.example.com"
        testers = BackgroundLoad(demo.endpoints.gateway, [tag_host], rate=20, max_seconds=60)

        def show_tag(event: dict[str, Any]) -> None:
            if event["kind"] == "step_advanced" and "tag canary" in event["message"]:
                url = demo.pipeline.get(f"/v1/rollouts/{rollout['id']}").json()["target"]["canary_url"]
                for host, who in ((tag_host, f"the tag URL {url}"), (HOST, "the Service's URL")):
                    bodies = asyncio.run(sample(demo.endpoints.gateway, host, 10))
                    counts = ", ".join(f"{b} x{bodies.count(b)}" for b in sorted(set(bodies)))
                    console.print(f"    10 requests to {who}: {counts}")

        try:
            final = demo.follow(rollout["id"], show_tag)
        finally:
            testers.stop()
        results.append(_result("tag first", v5, "succeeded", final, demo))
    finally:
        load.stop()

    console.rule("5. Istio: reviews v1 and v2 at 50/50 by hand, then v2 as an autocanary canary")
    demo_istio.by_hand(demo)
    final = demo_istio.with_autocanary(demo)
    results.append(_result("istio promote", "reviews v2", "succeeded", final, demo, split=demo_istio.split(demo)))
    return results


def _result(
    case: str, revision: str, expected: str, final: dict[str, Any], demo: Demo, split: dict[str, int] | None = None
) -> dict[str, Any]:
    events = demo.pipeline.get(f"/v1/rollouts/{final['id']}/events").json()
    return {
        "case": case,
        "revision": revision,
        "expected": expected,
        "phase": final["phase"],
        "reason": final["reason"],
        "rollout_id": final["id"],
        "split": demo.split() if split is None else split,
        "events": [e["kind"] for e in events],
        "actor": (final.get("last_action") or {}).get("actor"),
    }


def main(summary: Path | None = None) -> None:
    os.environ.setdefault("COLUMNS", "120")
    stop_on_sigterm()
    try:
        code = run(summary)
    except (OSError, RuntimeError, TimeoutError, httpx.HTTPError) as exc:
        console.print(f"[red]demo failed: {exc}[/] (everything it started has been stopped)")
        code = 1
    raise SystemExit(code)

"""Contract tests of the watched copy of routed objects (`adapters.kubernetes.watched`) and of the
Knative target and router reading from it, against the sandbox API server over real HTTP."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import urllib3.exceptions
from kubernetes import client

from adapters.knative import GROUP, VERSION, KnativeRouter, KnativeTarget
from adapters.kubernetes.api import KubernetesApi
from adapters.kubernetes.watched import NotSynced, WatchedObjects
from rollouts import ForeignChange, SetTraffic
from rollouts.ports import TargetRef, TargetState
from sandbox.cluster import Endpoints
from tests.knative import create, get, hello_service, new_revision, service_ready, wait_for

V1, V2 = "hello-00001", "hello-00002"


@pytest.fixture
def services(kube: KubernetesApi) -> Iterator[WatchedObjects]:
    watched = WatchedObjects(kube, GROUP, VERSION, "services", watch_seconds=5).start()
    wait_for(lambda: watched.synced, 10, "the first LIST")
    yield watched
    watched.stop()


def _pinned(found: dict[str, Any] | None) -> dict[str, int]:
    """The revisions pinned by name in the Service's spec.traffic, with their percents."""
    traffic = [] if found is None else (found.get("spec") or {}).get("traffic") or []
    return {t["revisionName"]: t["percent"] for t in traffic if t.get("revisionName")}


def test_the_copy_follows_creates_changes_and_deletes(
    api: client.CustomObjectsApi, services: WatchedObjects, namespace: str
) -> None:
    create(api, namespace, hello_service("hello", "World"))
    service_ready(api, namespace, "hello", V1)
    seen = wait_for(lambda: services.get(namespace, "hello"), 5, "the created Service in the copy")
    assert seen["metadata"]["name"] == "hello"

    new_revision(api, namespace, "hello", "Knative", pin=V1)  # someone else's write
    wait_for(
        lambda: _pinned(services.get(namespace, "hello")) == {V1: 100},
        5,
        "the pinned traffic in the copy",
    )

    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, "services", "hello")
    wait_for(lambda: services.get(namespace, "hello") is None or None, 5, "the deletion in the copy")
    assert services.get(namespace, "hello") is None


def test_streams_that_end_are_resumed_without_losing_a_change(
    api: client.CustomObjectsApi, kube: KubernetesApi, namespace: str
) -> None:
    watched = WatchedObjects(kube, GROUP, VERSION, "services", watch_seconds=1).start()
    try:
        wait_for(lambda: watched.synced, 10, "the first LIST")
        for index in range(4):  # the 1 s streams end and are resumed between these writes
            create(api, namespace, hello_service(f"s{index}", "World"))
            wait_for(lambda: watched.synced and watched.get(namespace, f"s{index}"), 5, f"s{index} in the copy")  # noqa: B023
            time.sleep(0.6)
        assert all(watched.get(namespace, f"s{i}") is not None for i in range(4))
    finally:
        watched.stop()


def _watch_starts(kube: KubernetesApi, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The resourceVersion each watch through `kube` starts from, in order (one kind per test)."""
    real_list = kube.custom.list_cluster_custom_object
    watched_from: list[int] = []

    def noting_where_watches_start(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("watch"):
            watched_from.append(int(kwargs["resource_version"]))
        return real_list(*args, **kwargs)

    monkeypatch.setattr(kube.custom, "list_cluster_custom_object", noting_where_watches_start)
    return watched_from


def test_a_new_stream_resumes_after_the_last_change_seen_not_from_the_list(
    api: client.CustomObjectsApi, kube: KubernetesApi, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    watched_from = _watch_starts(kube, monkeypatch)
    watched = WatchedObjects(kube, GROUP, VERSION, "services", watch_seconds=1).start()
    try:
        wait_for(lambda: watched_from, 10, "the first watch")
        listed = watched_from[0]
        created = create(api, namespace, hello_service("later", "World"))
        changed = int(created["metadata"]["resourceVersion"])
        wait_for(lambda: len(watched_from) >= 3, 10, "two more 1 s streams")
    finally:
        watched.stop()
    # Resuming from the LIST's version replays every change since, and is refused once the
    # server's history no longer reaches back to it (410 Gone, a full LIST again).
    assert listed < changed <= watched_from[-1], (listed, changed, watched_from)


def test_a_watch_of_a_quiet_kind_resumes_from_the_bookmark_the_server_ends_its_stream_with(
    api: client.CustomObjectsApi, kube: KubernetesApi, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    watched_from = _watch_starts(kube, monkeypatch)
    quiet = WatchedObjects(kube, "networking.istio.io", "v1", "virtualservices", watch_seconds=1).start()
    try:
        wait_for(lambda: watched_from, 10, "the first watch")
        elsewhere = create(api, namespace, hello_service("elsewhere", "World"))  # a change of another kind
        changed = int(elsewhere["metadata"]["resourceVersion"])
        wait_for(lambda: watched_from[-1] >= changed or None, 10, "a watch resumed from a bookmark")
    finally:
        quiet.stop()
    assert quiet.refused is None


def test_a_resource_that_cannot_be_watched_leaves_reads_to_the_api_server(kube: KubernetesApi) -> None:
    watched = WatchedObjects(kube, GROUP, VERSION, "nosuchthings", retry_seconds=0.1).start()
    wait_for(lambda: watched.refused, 10, "the refusal")
    assert "nosuchthings" in (watched.refused or "")
    with pytest.raises(NotSynced):
        watched.get("default", "anything")


def test_a_break_is_one_warning_and_its_end_another_not_one_per_retry(
    kube: KubernetesApi, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_list = kube.custom.list_cluster_custom_object
    failures = iter(range(3))

    def unreachable_three_times(*args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("watch") and next(failures, None) is not None:
            raise urllib3.exceptions.MaxRetryError(None, "/apis", "connection refused")  # type: ignore[arg-type]
        return real_list(*args, **kwargs)

    monkeypatch.setattr(kube.custom, "list_cluster_custom_object", unreachable_three_times)
    caplog.set_level(logging.INFO, logger="autocanary")
    watched = WatchedObjects(kube, GROUP, VERSION, "services", retry_seconds=0.05).start()
    try:
        wait_for(lambda: watched.synced, 10, "the LIST after three failures")
    finally:
        watched.stop()
    said = [(r.levelname, r.getMessage().split(",")[0].split(" after ")[0]) for r in caplog.records]
    assert said == [
        ("WARNING", "watch of services broken"),
        ("INFO", "watch of services broken"),
        ("INFO", "watch of services broken"),
        ("WARNING", "watch of services listed again"),
    ]


def test_the_sandbox_resumes_a_watch_from_a_resource_version(
    sandbox: Endpoints, api: client.CustomObjectsApi, namespace: str
) -> None:
    first = create(api, namespace, hello_service("one", "World"))
    since = first["metadata"]["resourceVersion"]
    create(api, namespace, hello_service("two", "World"))
    url = f"{sandbox.apiserver}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/services"
    with httpx.stream("GET", url, params={"watch": "true", "resourceVersion": since, "timeoutSeconds": "1"}) as answer:
        events = [json.loads(line) for line in answer.iter_lines() if line]
    names = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
    assert ("ADDED", "two") in names and ("ADDED", "one") not in names
    assert all(int(e["object"]["metadata"]["resourceVersion"]) > int(since) for e in events)


def test_the_target_reads_the_copy_and_fresh_when_asked(
    api: client.CustomObjectsApi, kube: KubernetesApi, services: WatchedObjects, namespace: str
) -> None:
    target = KnativeTarget(kube, watched=services)
    ref = TargetRef("knative", namespace, "hello", V1, V2)
    create(api, namespace, hello_service("hello", "World"))
    observed = target.observe([ref])[ref]  # not in the copy yet, or already: either way it is there
    assert isinstance(observed, TargetState) and observed.name == "hello"
    service_ready(api, namespace, "hello", V1)
    new_revision(api, namespace, "hello", "Knative", pin=V1)
    fresh = target.observe([ref], fresh=True)[ref]
    assert isinstance(fresh, TargetState) and fresh.pinned(V1, V2) is None  # the "latest" entry floats
    assert next(t.version for t in fresh.spec_traffic) == V1
    wait_for(lambda: _pinned(services.get(namespace, "hello")) == {V1: 100}, 5, "the copy to show the pin")
    cached = target.observe([ref])[ref]
    assert isinstance(cached, TargetState) and next(t.version for t in cached.spec_traffic) == V1
    missing = TargetRef("knative", namespace, "nobody", V1, V2)
    assert target.observe([missing])[missing] is None  # not in the copy: asked, and it is gone


def test_the_router_sees_its_own_write_in_the_copy_at_once(
    api: client.CustomObjectsApi, kube: KubernetesApi, services: WatchedObjects, namespace: str
) -> None:
    create(api, namespace, hello_service("hello", "World"))
    service_ready(api, namespace, "hello", V1)
    new_revision(api, namespace, "hello", "Knative", pin=V1)
    service_ready(api, namespace, "hello", V2)
    router = KnativeRouter(kube, settle_timeout=5.0, watched=services)
    ref = TargetRef("knative", namespace, "hello", V1, V2)
    state = router.set_weight(ref, SetTraffic(stable=90, canary=10))
    assert state.observed  # the controller's observation arrived through the copy
    held = services.get(namespace, "hello")
    assert held is not None
    assert _pinned(held) == {V1: 90, V2: 10}


class StaleCopy(WatchedObjects):
    """A watched copy stuck at one snapshot of the Service (a watch far behind)."""

    def __init__(self, kube: KubernetesApi, snapshot: dict[str, Any]) -> None:
        super().__init__(kube, GROUP, VERSION, "services")
        self.snapshot = snapshot

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.snapshot


def test_a_write_goes_out_from_a_fresh_read_whatever_the_copy_holds(
    api: client.CustomObjectsApi, kube: KubernetesApi, namespace: str
) -> None:
    create(api, namespace, hello_service("hello", "World"))
    service_ready(api, namespace, "hello", V1)
    new_revision(api, namespace, "hello", "Knative", pin=V1)
    service_ready(api, namespace, "hello", V2)
    snapshot = get(api, namespace, "services", "hello")
    KnativeRouter(kube, settle_timeout=5.0).set_weight(
        TargetRef("knative", namespace, "hello", V1, V2), SetTraffic(95, 5)
    )
    router = KnativeRouter(kube, settle_timeout=5.0, watched=StaleCopy(kube, snapshot))
    router.set_weight(TargetRef("knative", namespace, "hello", V1, V2), SetTraffic(90, 10))
    assert _pinned(get(api, namespace, "services", "hello")) == {V1: 90, V2: 10}


def test_a_foreign_change_seen_only_in_a_stale_copy_does_not_stop_the_write(
    api: client.CustomObjectsApi, kube: KubernetesApi, namespace: str
) -> None:
    create(api, namespace, hello_service("hello", "World"))
    service_ready(api, namespace, "hello", V1)
    new_revision(api, namespace, "hello", "Knative", pin=V1)
    service_ready(api, namespace, "hello", V2)
    ref = TargetRef("knative", namespace, "hello", V1, V2)
    plain = KnativeRouter(kube, settle_timeout=5.0)
    plain.set_weight(ref, SetTraffic(70, 30))  # the hand edit the copy still shows
    snapshot = get(api, namespace, "services", "hello")
    plain.set_weight(ref, SetTraffic(95, 5))  # put right since

    def guard(state: TargetState) -> None:
        if state.pinned(V1, V2) != {V1: 95, V2: 5}:
            raise ForeignChange(f"traffic is {state.pinned(V1, V2)}")

    router = KnativeRouter(kube, settle_timeout=5.0, watched=StaleCopy(kube, snapshot))
    router.set_weight(ref, SetTraffic(90, 10), guard=guard)
    assert _pinned(get(api, namespace, "services", "hello")) == {V1: 90, V2: 10}

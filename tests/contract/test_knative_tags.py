"""Knative tags against the sandbox, over real HTTP: the router tags the canary from its first
write (reachable at the tag URL at 0 %), a tag step routes only tagged requests, the final write
takes the tag out unless kept; the sandbox resolves tag URLs and serves tag hosts and the
`Knative-Serving-Tag` header as Knative does; and the canary-by-tag walkthrough by hand."""

from __future__ import annotations

import httpx
import pytest
from kubernetes import client

from adapters.knative import KnativeRouter, KnativeTarget
from adapters.kubernetes.api import KubernetesApi
from rollouts import PermanentError, SetTraffic
from rollouts.ports import RequestMatch, RoutePlan, TargetRef
from sandbox.cluster import Endpoints
from tests.knative import create, get, hello_service, new_revision, service_ready, wait_for

V1, V2 = "hello-00001", "hello-00002"


@pytest.fixture
def two_revisions(api: client.CustomObjectsApi, namespace: str) -> str:
    create(api, namespace, hello_service("hello", "World"))
    service_ready(api, namespace, "hello", V1)
    new_revision(api, namespace, "hello", "Knative", pin=V1)
    service_ready(api, namespace, "hello", V2)
    return namespace


def tagged(namespace: str, tag: str = "canary", keep: bool = False) -> TargetRef:
    return TargetRef("knative", namespace, "hello", V1, V2, tag=tag, keep_tag=keep)


def served(sandbox: Endpoints, host: str, **headers: str) -> set[str]:
    return {httpx.get(sandbox.gateway, headers={"Host": host, **headers}).text.strip() for _ in range(12)}


def test_the_canary_is_tagged_and_reachable_at_its_url_from_0_percent(
    sandbox: Endpoints, kube: KubernetesApi, two_revisions: str
) -> None:
    ref = tagged(two_revisions)
    state = KnativeRouter(kube).set_weight(ref, SetTraffic(stable=100, canary=0))
    assert state.tags == {"canary": V2}
    assert state.own_route == f"tag canary on {V2}"
    url = state.tag_url("canary")
    assert url == f"http://canary-hello.{two_revisions}.example.com"
    assert served(sandbox, url.removeprefix("http://")) == {"Hello Knative!"}
    assert served(sandbox, f"hello.{two_revisions}.example.com") == {"Hello World!"}  # 0 % by weight
    header = served(sandbox, f"hello.{two_revisions}.example.com", **{"Knative-Serving-Tag": "canary"})
    assert header == {"Hello Knative!"}
    unknown = served(sandbox, f"hello.{two_revisions}.example.com", **{"Knative-Serving-Tag": "nope"})
    assert unknown == {"Hello World!"}  # an unknown tag takes the default route


def test_a_tag_step_is_a_match_route_and_verified(kube: KubernetesApi, two_revisions: str) -> None:
    ref = tagged(two_revisions)
    plan = RoutePlan(SetTraffic(stable=100, canary=0), (RequestMatch("tag", "canary"),))
    router = KnativeRouter(kube)
    router.set_match_route(ref, plan)
    assert router.verify(ref, plan)
    with pytest.raises(PermanentError, match="routes by the canary's tag canary only"):
        router.set_match_route(ref, RoutePlan(plan.weights, (RequestMatch("header", "x", "y"),)))


@pytest.mark.parametrize(("keep", "tags"), [(False, {}), (True, {"canary": V2})])
def test_the_final_write_takes_the_tag_out_unless_kept(
    kube: KubernetesApi, two_revisions: str, keep: bool, tags: dict[str, str]
) -> None:
    ref = tagged(two_revisions, keep=keep)
    router = KnativeRouter(kube)
    router.set_weight(ref, SetTraffic(stable=50, canary=50))
    final = router.set_match_route(ref, RoutePlan(SetTraffic(stable=0, canary=100), final=True))
    assert final.tags == tags and final.split == {V1: 0, V2: 100}
    assert KnativeTarget(kube).get(two_revisions, "hello").tags == tags


def test_without_a_tag_nothing_is_tagged(kube: KubernetesApi, two_revisions: str) -> None:
    state = KnativeRouter(kube).set_weight(tagged(two_revisions, tag=""), SetTraffic(stable=90, canary=10))
    assert state.tags == {} and state.own_route == ""


def test_the_canary_by_tag_walkthrough_by_hand(
    sandbox: Endpoints, api: client.CustomObjectsApi, namespace: str
) -> None:
    """Knative's "routing by tag" walkthrough: a new revision tagged at 0 %, tried at its URL, then a split."""
    create(api, namespace, hello_service("hello", "World"))
    service_ready(api, namespace, "hello", V1)
    new_revision(api, namespace, "hello", "Knative", pin=V1)
    service_ready(api, namespace, "hello", V2)
    traffic = [
        {"revisionName": V1, "percent": 100, "tag": "current"},
        {"revisionName": V2, "percent": 0, "tag": "candidate"},
        {"latestRevision": True, "percent": 0, "tag": "latest"},
    ]
    api.patch_namespaced_custom_object(
        "serving.knative.dev", "v1", namespace, "services", "hello", {"spec": {"traffic": traffic}}
    )

    def urls() -> dict[str, str]:
        status = get(api, namespace, "services", "hello").get("status") or {}
        return {t["tag"]: t.get("url", "") for t in status.get("traffic") or [] if t.get("tag")}

    wait_for(lambda: len(urls()) == 3, what="three tag URLs")
    assert urls() == {tag: f"http://{tag}-hello.{namespace}.example.com" for tag in ("current", "candidate", "latest")}
    assert served(sandbox, f"candidate-hello.{namespace}.example.com") == {"Hello Knative!"}
    assert served(sandbox, f"latest-hello.{namespace}.example.com") == {"Hello Knative!"}
    assert served(sandbox, f"current-hello.{namespace}.example.com") == {"Hello World!"}
    assert served(sandbox, f"hello.{namespace}.example.com") == {"Hello World!"}
    duplicate = [{"revisionName": V1, "percent": 50, "tag": "x"}, {"revisionName": V2, "percent": 50, "tag": "x"}]
    with pytest.raises(client.exceptions.ApiException) as refused:
        api.patch_namespaced_custom_object(
            "serving.knative.dev", "v1", namespace, "services", "hello", {"spec": {"traffic": duplicate}}
        )
    assert refused.value.status == 400 and 'Multiple definitions for \\"x\\"' in str(refused.value.body)

"""Contract tests of the Knative adapters (target, router, events) against the sandbox API server, over real HTTP."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from adapters.factory import kubernetes_backends
from adapters.knative import GROUP, KnativeRouter, KnativeTarget
from adapters.kubernetes.api import KubernetesApi
from rollouts import ForeignChange, PermanentError, SetTraffic, TransientError
from rollouts.ports import EventRecorder, RoutePlan, TargetRef, TargetState
from sandbox.cluster import Endpoints
from tests.knative import create, custom_objects, get, hello_service, new_revision, service_ready, wait_for

V1, V2 = "hello-00001", "hello-00002"


@pytest.fixture
def router(kube: KubernetesApi) -> KnativeRouter:
    return KnativeRouter(kube, settle_timeout=5.0)


@pytest.fixture
def target(kube: KubernetesApi) -> KnativeTarget:
    return KnativeTarget(kube)


@pytest.fixture
def events(kube: KubernetesApi) -> EventRecorder:
    return kubernetes_backends(kube).of("knative").events


def hello(namespace: str, canary: str = V2, stable: str = V1, name: str = "hello") -> TargetRef:
    return TargetRef("knative", namespace, name, stable, canary)


@pytest.fixture
def two_revisions(api: client.CustomObjectsApi, namespace: str) -> str:
    """A service `hello` with a ready v1 serving 100 % and a ready v2 at 0 %."""
    create(api, namespace, hello_service("hello", "World"))
    service_ready(api, namespace, "hello", V1)
    new_revision(api, namespace, "hello", "Knative", pin=V1)
    service_ready(api, namespace, "hello", V2)
    return namespace


def test_splits_0_10_50_100(router: KnativeRouter, target: KnativeTarget, two_revisions: str) -> None:
    for canary in (0, 10, 50, 100):
        weights = SetTraffic(stable=100 - canary, canary=canary)
        state = router.set_weight(hello(two_revisions), weights)
        assert state.observed
        assert state.is_live(weights, V1, V2)
        assert state.pinned(V1, V2) == {V1: 100 - canary, V2: canary}
        assert target.get(two_revisions, "hello").split == {V1: 100 - canary, V2: canary}
        assert router.verify(hello(two_revisions), RoutePlan(weights))
    spec_traffic = target.get(two_revisions, "hello").spec_traffic
    assert not any(target.latest for target in spec_traffic)  # pinned by name, never floating


class InterferingApi(client.CustomObjectsApi):
    """Another writer changes the service between our read and our write, `times` times."""

    def __init__(self, real: client.CustomObjectsApi, other: client.CustomObjectsApi, times: int) -> None:
        super().__init__(real.api_client)
        self.other = other
        self.remaining = times
        self.conflicts = 0

    def get_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> object:
        found = super().get_namespaced_custom_object(*args, **kwargs)
        if args[3] == "services" and self.remaining > 0:
            self.remaining -= 1
            label = {"metadata": {"labels": {"touched-by": f"other-{self.remaining}"}}}
            group, version, namespace, plural, name = args[:5]
            self.other.patch_namespaced_custom_object(group, version, namespace, plural, name, label)
        return found

    def patch_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> object:
        try:
            return super().patch_namespaced_custom_object(*args, **kwargs)
        except client.exceptions.ApiException as exc:
            self.conflicts += exc.status == 409
            raise


def kube_with(sandbox: Endpoints, custom: client.CustomObjectsApi) -> KubernetesApi:
    kube = KubernetesApi.from_kubeconfig(sandbox.kubeconfig)
    kube.custom = custom
    return kube


def test_a_concurrent_writer_causes_a_conflict_that_is_retried(
    sandbox: Endpoints, api: client.CustomObjectsApi, two_revisions: str
) -> None:
    interfering = InterferingApi(custom_objects(sandbox), api, times=2)
    router = KnativeRouter(kube_with(sandbox, interfering), backoff=0.01)
    state = router.set_weight(hello(two_revisions), SetTraffic(stable=75, canary=25))
    assert interfering.conflicts == 2
    assert state.is_live(SetTraffic(stable=75, canary=25), V1, V2)
    labels = get(api, two_revisions, "services", "hello")["metadata"]["labels"]
    assert labels == {"touched-by": "other-0"}  # the other writer's change survived ours


def test_endless_conflicts_end_in_a_transient_error(
    sandbox: Endpoints, api: client.CustomObjectsApi, two_revisions: str
) -> None:
    interfering = InterferingApi(custom_objects(sandbox), api, times=100)
    router = KnativeRouter(kube_with(sandbox, interfering), conflict_retries=2, backoff=0.001)
    with pytest.raises(TransientError, match="still conflicts with another writer after 3 attempts"):
        router.set_weight(hello(two_revisions), SetTraffic(stable=50, canary=50))


def test_an_operator_edit_between_read_and_write_is_never_overwritten(
    router: KnativeRouter, target: KnativeTarget, api: client.CustomObjectsApi, two_revisions: str
) -> None:
    router.set_weight(hello(two_revisions), SetTraffic(stable=75, canary=25))
    seen: list[dict[str, int]] = []

    def guard(state: TargetState) -> None:
        """Checks what was read, as the runner does; the first time, an operator edits right after."""
        seen.append(state.pinned(V1, V2) or {})
        if state.pinned(V1, V2) != {V1: 75, V2: 25}:
            raise ForeignChange(f"traffic was set to {state.pinned(V1, V2)} by someone else")
        if len(seen) == 1:
            operator = {"spec": {"traffic": [{"revisionName": V1, "percent": 60}, {"revisionName": V2, "percent": 40}]}}
            api.patch_namespaced_custom_object(GROUP, "v1", two_revisions, "services", "hello", operator)

    with pytest.raises(ForeignChange, match="by someone else"):
        router.set_weight(hello(two_revisions), SetTraffic(stable=50, canary=50), guard=guard)
    assert seen == [{V1: 75, V2: 25}, {V1: 60, V2: 40}]  # the re-read after the 409 went through the guard
    assert target.get(two_revisions, "hello").pinned(V1, V2) == {V1: 60, V2: 40}


def test_an_invalid_split_gets_the_knative_message(router: KnativeRouter, two_revisions: str) -> None:
    broken = object.__new__(SetTraffic)  # what a buggy caller might send, bypassing SetTraffic's own check
    object.__setattr__(broken, "stable", 80)
    object.__setattr__(broken, "canary", 10)
    with pytest.raises(PermanentError) as error:
        router.set_weight(hello(two_revisions), broken)
    assert 'admission webhook "validation.webhook.serving.knative.dev" denied the request' in str(error.value)
    assert "Traffic targets sum to 90, want 100: spec.traffic" in str(error.value)


def test_an_invalid_revision_name_gets_the_knative_message(router: KnativeRouter, two_revisions: str) -> None:
    with pytest.raises(PermanentError, match=r'400 .*invalid key name "hello 00002": spec.traffic\[1\].revisionName'):
        router.set_weight(hello(two_revisions, canary="hello 00002"), SetTraffic(stable=90, canary=10))


def test_an_unknown_service_is_a_permanent_404(router: KnativeRouter, target: KnativeTarget, namespace: str) -> None:
    with pytest.raises(PermanentError, match=r'404 services\.serving\.knative\.dev "ghost" not found'):
        target.get(namespace, "ghost")
    ghost = hello(namespace, name="ghost", stable="ghost-00001", canary="ghost-00002")
    assert target.observe([ghost]) == {ghost: None}  # gone, for the runner: the rollout fails as deleted
    with pytest.raises(PermanentError, match="404"):
        router.set_weight(ghost, SetTraffic(stable=90, canary=10))


def test_an_unreachable_api_server_is_transient() -> None:
    configuration = client.Configuration(host="http://127.0.0.1:9")  # discard port: nothing listens
    configuration.retries = 0
    target = KnativeTarget(KubernetesApi(client.ApiClient(configuration), request_timeout=1.0))
    with pytest.raises(TransientError, match="Kubernetes API unreachable"):
        target.get("default", "hello")
    (observed,) = target.observe([hello("default")]).values()
    assert isinstance(observed, TransientError)


def test_a_never_ready_revision_is_visible(
    api: client.CustomObjectsApi, router: KnativeRouter, target: KnativeTarget, namespace: str
) -> None:
    create(api, namespace, hello_service("hello", "World"))
    service_ready(api, namespace, "hello", V1)
    new_revision(api, namespace, "hello", "Broken", pin=V1, SANDBOX_NEVER_READY="true")
    wait_for(lambda: get(api, namespace, "services", "hello")["status"].get("latestCreatedRevisionName") == V2)
    revision = target.version(hello(namespace), V2)
    assert not revision.is_ready
    assert revision.ready == "Unknown"
    assert "SANDBOX_NEVER_READY" in revision.message
    state = router.set_weight(hello(namespace), SetTraffic(stable=100, canary=0))
    assert state.routes_reason == "RevisionMissing"
    assert f'Revision "{V2}" is not yet ready.' == state.routes_message
    assert state.newest_ready_version == V1
    assert state.split == {V1: 100}  # the route keeps serving what it served


def test_a_revision_that_does_not_exist_shows_revision_missing(router: KnativeRouter, two_revisions: str) -> None:
    state = router.set_weight(hello(two_revisions, canary="hello-00009"), SetTraffic(stable=90, canary=10))
    assert (state.ready, state.routes_reason) == ("False", "RevisionMissing")
    assert state.routes_message == 'Revision "hello-00009" referenced in traffic not found.'


def test_api_server_write_rules(sandbox: Endpoints, api: client.CustomObjectsApi, two_revisions: str) -> None:
    url = f"{sandbox.apiserver}/apis/serving.knative.dev/v1/namespaces/{two_revisions}/services/hello"
    strategic = httpx.patch(url, content=b"{}", headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert strategic.status_code == 415
    assert strategic.json()["reason"] == "UnsupportedMediaType"
    assert "accepted media types include: application/json-patch+json" in strategic.json()["message"]

    current = get(api, two_revisions, "services", "hello")
    no_version = {**current, "metadata": {**current["metadata"], "resourceVersion": ""}}
    missing = httpx.put(url, content=json.dumps(no_version))
    assert (missing.status_code, missing.json()["reason"]) == (422, "Invalid")
    stale = {**current, "metadata": {**current["metadata"], "resourceVersion": "1"}}
    conflict = httpx.put(url, content=json.dumps(stale))
    assert (conflict.status_code, conflict.json()["reason"]) == (409, "Conflict")

    generation = current["metadata"]["generation"]
    labelled = httpx.patch(
        url,
        content=b'{"metadata":{"labels":{"x":"y"}}}',
        headers={"Content-Type": "application/merge-patch+json"},
    ).json()
    assert labelled["metadata"]["generation"] == generation  # metadata only: no new generation
    assert int(labelled["metadata"]["resourceVersion"]) > int(current["metadata"]["resourceVersion"])
    traffic = [{"op": "replace", "path": "/spec/traffic/0/percent", "value": 0}]
    traffic.append({"op": "replace", "path": "/spec/traffic/1/percent", "value": 100})
    patched = httpx.patch(url, content=json.dumps(traffic), headers={"Content-Type": "application/json-patch+json"})
    assert patched.status_code == 200
    assert patched.json()["metadata"]["generation"] == generation + 1


def test_a_namespace_kubernetes_would_refuse_is_refused(api: client.CustomObjectsApi) -> None:
    with pytest.raises(client.exceptions.ApiException) as error:
        create(api, "bad_namespace", hello_service("hello", "World"))
    assert error.value.status == 422 and "a lowercase RFC 1123 label" in str(error.value.body)


def test_the_readiness_check_passes_against_the_sandbox(kube: KubernetesApi) -> None:
    assert kube.ready()  # /version carries every field the client's VersionInfo requires


def test_discovery_answers_the_kubernetes_client(sandbox: Endpoints, api: client.CustomObjectsApi) -> None:
    groups = client.ApisApi(api.api_client).get_api_versions()
    assert [group.name for group in groups.groups] == [
        "serving.knative.dev",
        "networking.istio.io",
        "apps",
        "gateway.networking.k8s.io",
    ]
    resources = httpx.get(f"{sandbox.apiserver}/apis/serving.knative.dev/v1").json()
    assert {r["name"] for r in resources["resources"]} == {"services", "revisions"}


def test_transitions_are_recorded_as_events_kubectl_describe_would_list(
    api: client.CustomObjectsApi, events: EventRecorder, two_revisions: str
) -> None:
    uid = get(api, two_revisions, "services", "hello")["metadata"]["uid"]
    events.record_event(two_revisions, "hello", reason="CanaryStepAdvanced", message="canary at 10 %", warning=False)
    events.record_event(two_revisions, "hello", reason="CanaryRolledBack", message="errors: 5xx 2 %", warning=True)
    core = client.CoreV1Api(api.api_client)
    # The field selector `kubectl describe ksvc hello` sends.
    selector = f"involvedObject.name=hello,involvedObject.namespace={two_revisions},involvedObject.uid={uid}"
    listed = core.list_namespaced_event(two_revisions, field_selector=selector).items
    assert [(e.reason, e.type, e.message) for e in listed] == [
        ("CanaryStepAdvanced", "Normal", "canary at 10 %"),
        ("CanaryRolledBack", "Warning", "errors: 5xx 2 %"),
    ]
    assert {(e.involved_object.kind, e.involved_object.api_version) for e in listed} == {
        ("Service", "serving.knative.dev/v1")
    }
    assert {e.source.component if e.source else None for e in listed} == {"autocanary"}
    assert core.list_namespaced_event(two_revisions, field_selector="involvedObject.name=other").items == []


def test_an_event_on_a_missing_service_is_a_permanent_error(events: EventRecorder, namespace: str) -> None:
    with pytest.raises(PermanentError, match="404"):
        events.record_event(namespace, "nope", reason="CanaryFailed", message="gone", warning=True)


def _run_kubectl(sandbox: Endpoints, *args: str) -> subprocess.CompletedProcess[str]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "scripts/bootstrap.sh installs kubectl (Debian: kubernetes-client)"
    return subprocess.run(  # noqa: S603 (our own arguments)
        [kubectl, "--kubeconfig", sandbox.kubeconfig, *args], capture_output=True, text=True, timeout=60, check=False
    )


def _kubectl(sandbox: Endpoints, *args: str) -> str:
    found = _run_kubectl(sandbox, *args)
    assert found.returncode == 0, found.stderr
    return found.stdout


def test_kubectl_gets_knative_services_by_their_short_name(sandbox: Endpoints, two_revisions: str) -> None:
    assert _kubectl(sandbox, "get", "ksvc", "-n", two_revisions, "-o", "name").split() == [
        "service.serving.knative.dev/hello"
    ]


def test_kubectl_prints_the_columns_knatives_crds_declare(sandbox: Endpoints, two_revisions: str) -> None:
    header, row = _kubectl(sandbox, "get", "ksvc", "hello", "-n", two_revisions).splitlines()
    assert header.split() == ["NAME", "URL", "LATESTCREATED", "LATESTREADY", "READY", "REASON", "AGE"]
    assert row.split()[0] == "hello" and V2 in row.split() and "True" in row.split()
    revisions = _kubectl(sandbox, "get", "rev", "-n", two_revisions).splitlines()
    assert revisions[0].split()[:3] == ["NAME", "CONFIG", "NAME"] and len(revisions) == 3


def _manifest(tmp_path: Path, namespace: str, target: str, extra_spec: str = "") -> str:
    path = tmp_path / f"hello-{target}.yaml"
    path.write_text(
        "apiVersion: serving.knative.dev/v1\nkind: Service\n"
        f"metadata:\n  name: hello\n  namespace: {namespace}\n"
        f"spec:\n{extra_spec}  template:\n    spec:\n      containers:\n"
        f"        - image: ghcr.io/knative/helloworld-go:latest\n          env:\n"
        f"            - name: TARGET\n              value: {target}\n"
    )
    return str(path)


def test_kubectl_apply_validates_through_the_server_as_against_a_cluster(
    sandbox: Endpoints, api: client.CustomObjectsApi, namespace: str, tmp_path: Path
) -> None:
    # The walkthrough's own steps, with kubectl's default validation (no --validate=false).
    assert "created" in _kubectl(sandbox, "apply", "-f", _manifest(tmp_path, namespace, "World"))
    service_ready(api, namespace, "hello", V1)
    assert "configured" in _kubectl(sandbox, "apply", "-f", _manifest(tmp_path, namespace, "Knative"))
    service_ready(api, namespace, "hello", V2)
    assert "unchanged" in _kubectl(sandbox, "apply", "-f", _manifest(tmp_path, namespace, "Knative"))

    # A typo is refused by the server, as a CRD's structural schema refuses it, and changes nothing.
    typo = _manifest(tmp_path, namespace, "Typo", extra_spec="  trafic: []\n")
    refused = _run_kubectl(sandbox, "apply", "-f", typo)
    assert refused.returncode != 0
    assert 'strict decoding error: unknown field "spec.trafic"' in refused.stderr
    assert get(api, namespace, "services", "hello")["status"]["latestCreatedRevisionName"] == V2

    warned = _run_kubectl(sandbox, "apply", "--validate=warn", "-f", typo)
    assert warned.returncode == 0, warned.stderr
    assert 'unknown field "spec.trafic"' in warned.stderr


def test_an_unknown_field_validation_directive_is_refused_naming_it(sandbox: Endpoints, two_revisions: str) -> None:
    url = f"{sandbox.apiserver}/apis/{GROUP}/v1/namespaces/{two_revisions}/services/hello"
    answer = httpx.patch(
        url,
        params={"fieldValidation": "Lenient"},
        content=json.dumps({"metadata": {"labels": {"team": "a"}}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert answer.status_code == 400
    assert 'fieldValidation: Unsupported value: "Lenient"' in answer.json()["message"]

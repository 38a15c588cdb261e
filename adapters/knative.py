"""Knative Serving behind the ports: the Service and its revisions as a `Target`, `spec.traffic`
as a `Router`.

Every write follows "Knative facts" in design.md: both revisions pinned by name (never
`latestRevision: true`, which would float to any newer revision), one JSON merge patch (which
replaces the whole `spec.traffic` list) conditioned on `metadata.resourceVersion`, a bounded
retry with backoff when another writer got there first (409), each re-read shown to the guard
again, and a bounded read-back until the controller has observed the new generation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tenacity import RetryError

from adapters import retry
from adapters.kubernetes.api import Conflict, KubernetesApi, condition
from adapters.kubernetes.watched import WatchedObjects
from adapters.observing import observe_by_namespace
from rollouts.actions import SetTraffic
from rollouts.errors import PermanentError, TargetNotFound, TransientError, ValidationError
from rollouts.ports import (
    Observation,
    RoutePlan,
    Target,
    TargetRef,
    TargetRequest,
    TargetState,
    TrafficTarget,
    VersionState,
    WriteGuard,
)

KIND = "knative"
GROUP, VERSION = "serving.knative.dev", "v1"


class KnativeTarget:
    """A Knative Service and its revisions."""

    def __init__(
        self, api: KubernetesApi, *, read_concurrency: int = 16, watched: WatchedObjects | None = None
    ) -> None:
        self.api = api
        self.read_concurrency = read_concurrency
        self.watched = watched

    def get(self, namespace: str, name: str) -> TargetState:
        return service_state(self.api.get(GROUP, VERSION, "services", namespace, name))

    def observe(self, refs: Sequence[TargetRef], *, fresh: bool = False) -> Mapping[TargetRef, Observation]:
        """From the watched Services, or one LIST per namespace with many rollouts and single GETs
        otherwise, namespaces concurrently."""
        return observe_by_namespace(
            refs,
            get=self._get_or_none,
            list_namespace=lambda namespace: {
                item["metadata"]["name"]: item for item in self.api.list(GROUP, VERSION, "services", namespace)
            },
            state=lambda found, ref: service_state(found, ref.tag),
            concurrency=self.read_concurrency,
            watched=self.watched,
            fresh=fresh,
        )

    def version(self, ref: TargetRef, version: str) -> VersionState:
        namespace = ref.namespace
        found = self.api.get(GROUP, VERSION, "revisions", namespace, version)
        ready = condition(found, "Ready")
        return VersionState(
            namespace=namespace,
            name=version,
            ready=str(ready.get("status", "Unknown")),
            reason=str(ready.get("reason", "")),
            message=str(ready.get("message", "")),
        )

    def resolve(self, request: TargetRequest) -> TargetRef:
        return resolve_revisions(self, request)

    def _get_or_none(self, ref: TargetRef) -> dict[str, Any] | None:
        try:
            return self.api.get(GROUP, VERSION, "services", ref.namespace, ref.name)
        except PermanentError:
            return None  # not found: the rollout fails as "deleted"


def resolve_revisions(target: Target, request: TargetRequest) -> TargetRef:
    """The Service exists (404 `service`); the canary defaults to its latest created revision, the
    stable to the revision serving 100 % now; both exist (404) and differ (422)."""
    where = f"{request.namespace}/{request.name}"
    try:
        state = target.get(request.namespace, request.name)
    except PermanentError as exc:
        raise TargetNotFound("service", f"service {where} not found") from exc
    canary = request.canary or state.newest_version
    if not canary:
        raise ValidationError.single("canary_revision", f"service {where} has no revision yet")
    stable = request.stable or next((rev for rev, pct in state.split.items() if pct == 100), None)
    if not stable:
        split = ", ".join(f"{rev} {pct} %" for rev, pct in state.split.items()) or "nothing"
        raise ValidationError.single(
            "stable_revision", f"no revision serves 100 % of {where} (it serves {split}); name one"
        )
    if canary == stable:
        raise ValidationError.single("canary_revision", f"canary and stable are both {canary}")
    ref = TargetRef(KIND, request.namespace, request.name, stable, canary)
    for field, revision in (("stable_revision", stable), ("canary_revision", canary)):
        try:
            target.version(ref, revision)
        except PermanentError as exc:
            raise TargetNotFound(field, f"revision {revision} not found in {request.namespace}") from exc
    return ref


class KnativeRouter:
    """Weights in the Service's `spec.traffic`, both revisions pinned by name; the canary's tag.

    A rollout whose policy names a `canary_tag` gives the canary's entry that tag from its first
    write (stable 100 %, canary 0 %) on, so the canary is reachable at its tag URL (and, where the
    cluster enables `tag-header-based-routing`, by the `Knative-Serving-Tag` header) before any
    user traffic reaches it. A tag match step is just that: weight 0 and the tag. The final write
    takes the tag out, unless the rollout keeps it.
    """

    match_fields: frozenset[str] = frozenset({"tag"})

    def __init__(
        self,
        api: KubernetesApi,
        *,
        conflict_retries: int = 5,
        backoff: float = 0.05,
        settle_timeout: float = 10.0,
        poll_interval: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        watched: WatchedObjects | None = None,
    ) -> None:
        self.api = api
        self.watched = watched
        self.conflict_retries = conflict_retries
        self.backoff = backoff
        self.settle_timeout = settle_timeout
        self.poll_interval = poll_interval
        self._sleep = sleep
        self._monotonic = monotonic

    def set_weight(self, ref: TargetRef, weights: SetTraffic, guard: WriteGuard | None = None) -> TargetState:
        return self.set_match_route(ref, RoutePlan(weights), guard)

    def set_match_route(self, ref: TargetRef, plan: RoutePlan, guard: WriteGuard | None = None) -> TargetState:
        """Pin `stable` and `canary` with the plan's weights (the canary tagged, but after the final
        write of a rollout that does not keep its tag); return the Service once the controller saw it.

        `guard` sees the Service after each read, before the write conditioned on that read's
        resourceVersion. Whatever lands between the read and the write (a newer owner's split,
        an operator's edit) makes the write meet a 409, and the re-read goes through the guard
        again: a worker that lost its fencing token stops with `FencedOut`, and a Service
        someone else changed stops with `ForeignChange`, so no such change is ever overwritten.
        """
        if ref.stable == ref.canary:
            raise PermanentError(f"stable and canary are the same revision {ref.stable!r}")
        unsupported = [m for m in plan.matches if m.field != "tag" or m.value != ref.tag]
        if unsupported:
            raise PermanentError(
                f"{ref.where}: the Knative router routes by the canary's tag {ref.tag or '(none)'} only,"
                f" not by {unsupported[0].field} {unsupported[0].value}"
            )
        traffic = planned_traffic(ref, plan)
        try:
            for attempt in retry.conflicts(self.conflict_retries, self.backoff, Conflict, self._sleep):
                with attempt:
                    written = self._write_once(ref, traffic, guard)
        except RetryError as exc:
            raise TransientError(
                f"traffic of {ref.where} still conflicts with another writer after {self.conflict_retries + 1} attempts"
            ) from exc
        return self._await_observed(ref, int(written["metadata"]["generation"]))

    def _write_once(self, ref: TargetRef, traffic: list[dict[str, Any]], guard: WriteGuard | None) -> dict[str, Any]:
        """Read from the API server (never the watched copy: a write's guard must not judge a copy
        that may be behind), show the guard what was read, write conditioned on it (`Conflict` if
        it moved)."""
        current = self.api.get(GROUP, VERSION, "services", ref.namespace, ref.name)
        if guard is not None:
            guard(service_state(current, ref.tag))
        patch = {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]}, "spec": {"traffic": traffic}}
        written = self.api.patch(GROUP, VERSION, "services", ref.namespace, ref.name, patch)
        if self.watched is not None:
            self.watched.remember(written)  # this worker's next tick sees its own write
        return written

    def verify(self, ref: TargetRef, plan: RoutePlan) -> bool:
        found = self.api.get(GROUP, VERSION, "services", ref.namespace, ref.name)
        state = service_state(found, ref.tag)
        written = (found.get("spec") or {}).get("traffic") or []
        return written == planned_traffic(ref, plan) and state.is_live(plan.weights, ref.stable, ref.canary)

    def remove_managed_routes(self, ref: TargetRef, guard: WriteGuard | None = None) -> None:
        """Take the canary's tag out, the weights as they are."""
        if not ref.tag:
            return
        state = service_state(self.api.get(GROUP, VERSION, "services", ref.namespace, ref.name), ref.tag)
        pinned = state.pinned(ref.stable, ref.canary) or {}
        weights = SetTraffic(stable=pinned.get(ref.stable, 100), canary=pinned.get(ref.canary, 0))
        self.set_match_route(ref, RoutePlan(weights, final=True), guard)

    def _await_observed(self, ref: TargetRef, generation: int) -> TargetState:
        """The Service once the controller has observed `generation`: seen in the watched copy
        when there is one (no request), else read every `poll_interval`; a copy that stops being
        trusted meanwhile hands over to reading."""
        deadline = self._monotonic() + self.settle_timeout
        if self.watched is not None and self.watched.synced:
            seen = self.watched.wait_for(
                ref.namespace,
                ref.name,
                lambda found: found is not None and _observed_generation(found) >= generation,
                self.settle_timeout,
            )
            if seen is not None:
                return service_state(seen, ref.tag)
        while True:
            state = service_state(self.api.get(GROUP, VERSION, "services", ref.namespace, ref.name), ref.tag)
            if state.observed_generation >= generation:
                return state
            if self._monotonic() >= deadline:
                raise TransientError(
                    f"{ref.where}: generation {generation} written but not observed by the"
                    f" controller after {self.settle_timeout:g}s (observed {state.observed_generation})"
                )
            self._sleep(self.poll_interval)


def planned_traffic(ref: TargetRef, plan: RoutePlan) -> list[dict[str, Any]]:
    """`spec.traffic` carrying the plan: both revisions pinned by name, the canary tagged unless
    this is the final write of a rollout that does not keep its tag."""
    canary: dict[str, Any] = {"revisionName": ref.canary, "percent": plan.weights.canary, "latestRevision": False}
    if ref.tag and not (plan.final and not ref.keep_tag):
        canary["tag"] = ref.tag
    return [{"revisionName": ref.stable, "percent": plan.weights.stable, "latestRevision": False}, canary]


def _targets(entries: list[dict[str, Any]] | None) -> tuple[TrafficTarget, ...]:
    return tuple(
        TrafficTarget(
            version=str(entry.get("revisionName") or ""),
            percent=int(entry.get("percent") or 0),
            latest=bool(entry.get("latestRevision")),
            tag=entry.get("tag"),
            url=str(entry.get("url") or ""),
        )
        for entry in entries or []
    )


def _observed_generation(found: dict[str, Any]) -> int:
    return int((found.get("status") or {}).get("observedGeneration", 0))


def service_state(found: dict[str, Any], tag: str = "") -> TargetState:
    """The Service as a rollout sees it; with the rollout's `tag`, the tag's entry is its own route."""
    metadata, spec, status = found["metadata"], found.get("spec") or {}, found.get("status") or {}
    routes = condition(found, "RoutesReady")
    spec_traffic = _targets(spec.get("traffic"))
    own = next((t for t in spec_traffic if tag and t.tag == tag), None)
    return TargetState(
        own_route=f"tag {tag} on {own.version}" if own else "",
        namespace=metadata["namespace"],
        name=metadata["name"],
        generation=int(metadata.get("generation", 0)),
        observed_generation=int(status.get("observedGeneration", 0)),
        resource_version=str(metadata.get("resourceVersion", "")),
        spec_traffic=spec_traffic,
        status_traffic=_targets(status.get("traffic")),
        newest_version=status.get("latestCreatedRevisionName"),
        newest_ready_version=status.get("latestReadyRevisionName"),
        ready=str(condition(found, "Ready").get("status", "Unknown")),
        routes_reason=str(routes.get("reason", "")),
        routes_message=str(routes.get("message", "")),
    )

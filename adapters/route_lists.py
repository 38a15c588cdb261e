"""The router of a list of routes in one object, which Istio and the Gateway API share.

A VirtualService's `spec.http` and an HTTPRoute's `spec.rules` are both ordered lists of routes:
autocanary manages one entry's two weights and, during a match step, adds one entry of its own
before it. `RouteListRouter` writes such a list once for both kinds: it reads the object, shows
what it read to the guard, works out the planned list with the kind's own rules (`RouteList`),
and writes it as one JSON merge patch of the list conditioned on `metadata.resourceVersion`; a
409 is re-read (and guarded) again, a bounded number of times. A list already as planned is not
written at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tenacity import RetryError

from adapters import retry
from adapters.kubernetes.api import Conflict, KubernetesApi
from adapters.kubernetes.watched import WatchedObjects
from rollouts.actions import SetTraffic
from rollouts.errors import PermanentError, TransientError
from rollouts.ports import RoutePlan, TargetRef, TargetState, WriteGuard

Routes = list[dict[str, Any]]


@dataclass(frozen=True)
class RouteList:
    """Where one kind keeps its routes, and its rules for them."""

    group: str
    version: str
    plural: str
    kind: str
    """The object's kind, for messages (`VirtualService`)."""
    field: str
    """The list under `spec` (`http`, `rules`)."""
    entry: str
    """What one entry is called, for messages (`route`, `rule`)."""
    unnamed: str
    """How the managed entry is found when the rollout names none, for messages."""
    managed: Callable[[Sequence[Mapping[str, Any]], TargetRef], int | None]
    """The index of the entry the rollout manages, or None when it is gone."""
    planned: Callable[[Routes, int, TargetRef, RoutePlan], Routes]
    """The list carrying a plan: the managed entry's weights, the own entry iff the plan has matches."""
    own_name: Callable[[TargetRef], str]
    """The name of autocanary's own match entry."""
    state: Callable[[dict[str, Any], TargetRef], TargetState]
    """The object as the rollout sees it."""


class RouteListRouter:
    """The managed entry's two weights, and autocanary's own match entry before it."""

    def __init__(
        self,
        api: KubernetesApi,
        routes: RouteList,
        match_fields: frozenset[str],
        *,
        conflict_retries: int = 5,
        backoff: float = 0.05,
        watched: WatchedObjects | None = None,
    ) -> None:
        self.api = api
        self.watched = watched
        self.routes = routes
        self.match_fields = match_fields
        self.conflict_retries = conflict_retries
        self.backoff = backoff

    def set_weight(self, ref: TargetRef, weights: SetTraffic, guard: WriteGuard | None = None) -> TargetState:
        return self.set_match_route(ref, RoutePlan(weights), guard)

    def set_match_route(self, ref: TargetRef, plan: RoutePlan, guard: WriteGuard | None = None) -> TargetState:
        """Write the plan: the managed entry's weights, and the match entry iff the plan has matches."""
        return self._write(ref, lambda routes, index: self.routes.planned(routes, index, ref, plan), guard)

    def remove_managed_routes(self, ref: TargetRef, guard: WriteGuard | None = None) -> None:
        own = self.routes.own_name(ref)
        self._write(ref, lambda routes, _: [r for r in routes if r.get("name") != own], guard)

    def verify(self, ref: TargetRef, plan: RoutePlan) -> bool:
        routes = self._routes(self._read(ref))
        index = self.routes.managed(routes, ref)
        return index is not None and self.routes.planned(routes, index, ref, plan) == routes

    def _read(self, ref: TargetRef) -> dict[str, Any]:
        return self.api.get(self.routes.group, self.routes.version, self.routes.plural, ref.namespace, ref.name)

    def _routes(self, found: Mapping[str, Any]) -> Routes:
        return list((found.get("spec") or {}).get(self.routes.field) or [])

    def _write(self, ref: TargetRef, change: Callable[[Routes, int], Routes], guard: WriteGuard | None) -> TargetState:
        try:
            for attempt in retry.conflicts(self.conflict_retries, self.backoff, Conflict):
                with attempt:
                    written = self._write_once(ref, change, guard)
        except RetryError as exc:
            raise TransientError(
                f"{self.routes.kind} {ref.where} still conflicts with another writer"
                f" after {self.conflict_retries + 1} attempts"
            ) from exc
        return self.routes.state(written, ref)

    def _write_once(
        self, ref: TargetRef, change: Callable[[Routes, int], Routes], guard: WriteGuard | None
    ) -> dict[str, Any]:
        """Read from the API server (not the watched copy, as the Knative router), show the guard,
        write conditioned on what was read (`Conflict` if it moved)."""
        current = self._read(ref)
        if guard is not None:
            guard(self.routes.state(current, ref))
        routes = self._routes(current)
        index = self.routes.managed(routes, ref)
        if index is None:
            what = f"{self.routes.entry} {ref.route or self.routes.unnamed}"
            raise PermanentError(f"{self.routes.kind} {ref.where} has no {what} any more")
        updated = change(routes, index)
        if updated == routes:
            return current
        patch = {
            "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
            "spec": {self.routes.field: updated},
        }
        routes_ = self.routes
        written = self.api.patch(routes_.group, routes_.version, routes_.plural, ref.namespace, ref.name, patch)
        if self.watched is not None:
            self.watched.remember(written)  # this worker's next tick sees its own write
        return written

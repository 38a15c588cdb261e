"""How a target reads the objects of a batch of rollouts in as few requests as it can: from the
worker's watched copy when it has one (`adapters.kubernetes.watched`), else one LIST per namespace
that holds more rollouts than `LIST_THRESHOLD`, a GET each otherwise, and the namespaces at once
(each read waits on the API server, not on this process)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar, cast

from adapters.kubernetes.watched import NotSynced, WatchedObjects
from rollouts.errors import TransientError
from rollouts.ports import Observation, TargetRef, TargetState

Found = TypeVar("Found")

LIST_THRESHOLD = 5
"""More rollouts than this in one namespace of a batch: one LIST instead of a GET each."""


def observe_by_namespace(
    refs: Sequence[TargetRef],
    *,
    get: Callable[[TargetRef], Found | None],
    list_namespace: Callable[[str], Mapping[str, Found]],
    state: Callable[[Found, TargetRef], TargetState],
    concurrency: int,
    watched: WatchedObjects | None = None,
    fresh: bool = False,
) -> dict[TargetRef, Observation]:
    """Each rollout's state (None: its object is gone), or the error that kept its namespace unread.

    `get` answers None for an object that does not exist; `list_namespace` maps names to objects.
    With `watched` (and not `fresh`), objects come from the watched copy; only those it does not
    hold (just created, or gone) are read from the API server.
    """
    observed: dict[TargetRef, Observation] = {}
    if watched is not None and not fresh:
        refs = _from_watched(refs, watched, state, observed)
        if not refs:
            return observed
    by_namespace: dict[str, list[TargetRef]] = defaultdict(list)
    for ref in refs:
        by_namespace[ref.namespace].append(ref)

    def read(namespace: str, members: list[TargetRef]) -> dict[TargetRef, Observation]:
        try:
            if len(members) > LIST_THRESHOLD:
                listed = list_namespace(namespace)
                found = {ref: listed.get(ref.name) for ref in members}
            else:
                found = {ref: get(ref) for ref in members}
        except TransientError as exc:
            return dict.fromkeys(members, exc)
        return {ref: state(item, ref) if item is not None else None for ref, item in found.items()}

    if len(by_namespace) <= 1:
        for namespace, members in by_namespace.items():
            observed.update(read(namespace, members))
        return observed
    with ThreadPoolExecutor(min(concurrency, len(by_namespace))) as pool:
        for result in pool.map(lambda item: read(*item), by_namespace.items()):
            observed.update(result)
    return observed


def _from_watched(
    refs: Sequence[TargetRef],
    watched: WatchedObjects,
    state: Callable[[Found, TargetRef], TargetState],
    observed: dict[TargetRef, Observation],
) -> Sequence[TargetRef]:
    """Fill `observed` from the watched copy; the refs still to read from the API server."""
    unseen: list[TargetRef] = []
    try:
        for ref in refs:
            found = watched.get(ref.namespace, ref.name)
            if found is None:
                unseen.append(ref)
                continue
            observed[ref] = watched.derive(ref, found, lambda obj: state(cast(Found, obj), ref))  # noqa: B023
    except NotSynced:
        observed.clear()
        return refs
    return unseen

"""What registering a rollout checks before anything is stored: the policy resolves, the body is
text, notification targets reach only allowed hosts, the target and both versions exist."""

from __future__ import annotations

from adapters.redis_store import RolloutStore
from api.errors import ApiError
from api.schemas import RolloutCreate
from policies import EgressRules, InvalidPolicy, Policy, Resolve, SitePolicies, field_path, load_policy
from rollouts.errors import PermanentError, ValidationError
from rollouts.model import TARGET_KIND as KNATIVE_KIND
from rollouts.model import Rollout
from rollouts.ports import Target, TargetRef


def resolved_policy(body: RolloutCreate, site: SitePolicies) -> Policy:
    try:
        return load_policy(body.policy, body.policy_overrides, site=site)
    except InvalidPolicy as exc:
        if any(problem.field == "policy" for problem in exc.problems):  # the name itself is unknown
            raise ValidationError(exc.problems) from exc
        raise ValidationError.from_invalid_policy(exc, "policy_overrides") from exc


def refuse_unencodable(value: object, path: tuple[str | int, ...] = ()) -> None:
    """A lone surrogate (valid JSON, "\\ud800") cannot be stored as UTF-8: refused, naming where it is."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValidationError.single(field_path(path), "contains a lone surrogate, not text") from exc
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_unencodable(key, path)
            refuse_unencodable(item, (*path, str(key)))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            refuse_unencodable(item, (*path, index))


def check_notifications(
    body: RolloutCreate, policy: Policy, site: SitePolicies, egress: EgressRules, resolve: Resolve
) -> None:
    """A notification target the rollout brings (not one of the named policy's) must be allowed."""
    if not policy.notifications:
        return
    trusted = set(load_policy(body.policy, site=site).notifications)
    for index, target in enumerate(policy.notifications):
        if target in trusted:
            continue
        problem = egress.problem(target.url, resolve)
        if problem:
            raise ValidationError.single(f"policy_overrides.notifications[{index}].url", problem)


def revisions(target: Target, body: RolloutCreate) -> tuple[str, str]:
    where = f"{body.namespace}/{body.service}"
    try:
        state = target.get(body.namespace, body.service)
    except PermanentError as exc:
        raise ApiError(404, "not_found", f"service {where} not found", "service") from exc
    canary = body.canary_revision or state.newest_version
    if not canary:
        raise ApiError(422, "validation_error", f"service {where} has no revision yet", "canary_revision")
    stable = body.stable_revision or next((rev for rev, pct in state.split.items() if pct == 100), None)
    if not stable:
        split = ", ".join(f"{rev} {pct} %" for rev, pct in state.split.items()) or "nothing"
        raise ApiError(
            422,
            "validation_error",
            f"no revision serves 100 % of {where} (it serves {split}); name one",
            "stable_revision",
        )
    if canary == stable:
        raise ApiError(422, "validation_error", f"canary and stable are both {canary}", "canary_revision")
    for field, revision in (("stable_revision", stable), ("canary_revision", canary)):
        try:
            target.version(TargetRef(KNATIVE_KIND, body.namespace, body.service, stable, canary), revision)
        except PermanentError as exc:
            raise ApiError(404, "not_found", f"revision {revision} not found in {body.namespace}", field) from exc
    return stable, canary


def found(store: RolloutStore, rollout_id: str) -> Rollout:
    rollout = store.get(rollout_id) if len(rollout_id) <= 64 else None
    if rollout is None:
        raise ApiError(404, "not_found", f"no rollout {rollout_id}", "rollout_id")
    return rollout

"""What registering a rollout checks before anything is stored: the policy resolves, the body is
text, notification targets reach only allowed hosts, the target and both versions exist (a
Knative Service and its revisions; a VirtualService, its route, the DestinationRule's subsets
and their Deployments; an HTTPRoute, its rule and both backend Services)."""

from __future__ import annotations

from adapters.redis_store import RolloutStore
from api.errors import ApiError
from api.schemas import GatewayApiTargetIn, IstioTargetIn, KnativeTargetIn, RolloutCreate
from policies import (
    Dialect,
    EgressRules,
    FieldProblem,
    InvalidPolicy,
    Policy,
    Resolve,
    SitePolicies,
    field_path,
    load_policy,
)
from rollouts.errors import TargetNotFound, UnknownTargetKind, ValidationError
from rollouts.matching import request_matches
from rollouts.model import Rollout
from rollouts.ports import Backends, TargetRef, TargetRequest

KNATIVE_KIND, ISTIO_KIND, GATEWAY_API_KIND = "knative", "istio", "gateway-api"


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


def resolved_target(backends: Backends, body: RolloutCreate) -> TargetRef:
    """The rollout's target as the cluster shows it now, each default filled in; a missing object
    is a 404 and anything else wrong a 422, both naming the request field."""
    target = body.target
    legacy = [name for name in ("namespace", "service", "canary_revision", "stable_revision") if getattr(body, name)]
    if target is not None and legacy:
        raise ValidationError.single(legacy[0], "give the target either as `target` or by these fields, not both")
    prefix = "target." if target is not None else ""
    if isinstance(target, GatewayApiTargetIn):
        request = TargetRequest(
            GATEWAY_API_KIND,
            target.namespace,
            target.http_route,
            target.stable_backend,
            target.canary_backend,
            target.rule or "",
        )
    elif isinstance(target, IstioTargetIn):
        request = TargetRequest(
            ISTIO_KIND,
            target.namespace,
            target.virtual_service,
            target.stable_subset,
            target.canary_subset,
            target.route or "",
            target.destination_rule or "",
        )
    elif isinstance(target, KnativeTargetIn):
        request = TargetRequest(
            KNATIVE_KIND, target.namespace, target.service, target.stable_revision or "", target.canary_revision or ""
        )
    else:
        for name in ("namespace", "service"):
            if getattr(body, name) is None:
                raise ValidationError.single(name, "required (or give `target`)")
        request = TargetRequest(
            KNATIVE_KIND, str(body.namespace), str(body.service), body.stable_revision or "", body.canary_revision or ""
        )
    try:
        return backends.of(request.kind).target.resolve(request)
    except UnknownTargetKind as exc:
        raise ApiError(422, "validation_error", str(exc), f"{prefix}kind") from exc
    except TargetNotFound as exc:
        raise ApiError(404, "not_found", str(exc), prefix + exc.field) from exc
    except ValidationError as exc:
        raise ValidationError([FieldProblem(prefix + p.field, p.message) for p in exc.problems]) from exc


def check_steps(policy: Policy, backends: Backends, target: TargetRef, body: RolloutCreate) -> None:
    """Every match step can be expressed by the target's router (422 naming the step otherwise)."""
    router = backends.of(target.kind).router
    overridden = bool(body.policy_overrides and "steps" in body.policy_overrides)
    for index in policy.match_steps:
        match = policy.step_match(index)
        unsupported = {m.field for m in request_matches(match)} - router.match_fields if match else set()
        if unsupported:
            field = f"policy_overrides.steps[{index}]" if overridden else "policy"
            supported = ", ".join(sorted(router.match_fields))
            detail = f"it routes by {supported} only" if supported else "it routes by weight only"
            needs = "tag steps need a knative target" if unsupported == {"tag"} else "match steps by request"
            needs += "" if unsupported == {"tag"} else " content need an istio or gateway-api target"
            raise ValidationError.single(
                field,
                f"step {index + 1} routes by {', '.join(sorted(unsupported))}, which a {target.kind} target cannot"
                f" express ({detail}); {needs}",
            )


def policy_for(policy: Policy, target: TargetRef) -> Policy:
    """The dialect that measures this target. An Istio canary is measured by Istio's metrics per
    version label (Knative's queue-proxy series do not exist for Deployments); a Knative revision
    with `istio` (Knative behind a mesh) by Istio's canonical service and revision labels. A
    policy's own queries (`custom`) measure any target as written."""
    if policy.dialect is Dialect.CUSTOM:
        return policy
    if target.kind == GATEWAY_API_KIND:
        raise ValidationError.single(
            "policy",
            f"a gateway-api target is measured by its implementation's own series: give a policy with"
            f" dialect custom (e.g. gateway-api-istio), not {policy.dialect.value}",
        )
    if target.kind == ISTIO_KIND and policy.dialect is not Dialect.ISTIO:
        return policy.model_copy(update={"dialect": Dialect.ISTIO})
    if target.kind == KNATIVE_KIND and policy.dialect is Dialect.ISTIO:
        return policy.model_copy(update={"dialect": Dialect.ISTIO_KNATIVE})
    return policy


def found(store: RolloutStore, rollout_id: str) -> Rollout:
    rollout = store.get(rollout_id) if len(rollout_id) <= 64 else None
    if rollout is None:
        raise ApiError(404, "not_found", f"no rollout {rollout_id}", "rollout_id")
    return rollout

"""Rollout policies: the `Policy` model and the built-in library (pure; imports nothing of ours)."""

from policies.custom_metrics import CustomMetrics
from policies.durations import Duration, format_duration, parse_duration
from policies.egress import SECRET_ENV_PREFIX, EgressRules, Resolve
from policies.errors import FieldProblem, InvalidPolicy
from policies.library import (
    SitePolicies,
    builtin_names,
    check_site_policies,
    deep_merge,
    field_path,
    load_policy,
    parse_policy_document,
    policy_names,
)
from policies.matches import MatchStep, RequestMatchSpec, StringMatch
from policies.model import (
    Dialect,
    Guardrails,
    InsufficientTrafficAction,
    LatencyBoundaries,
    NotificationEvent,
    NotificationKind,
    NotificationTarget,
    Policy,
)

__all__ = [
    "SECRET_ENV_PREFIX",
    "CustomMetrics",
    "Dialect",
    "Duration",
    "EgressRules",
    "FieldProblem",
    "Guardrails",
    "InsufficientTrafficAction",
    "InvalidPolicy",
    "LatencyBoundaries",
    "MatchStep",
    "NotificationEvent",
    "NotificationKind",
    "NotificationTarget",
    "Policy",
    "RequestMatchSpec",
    "Resolve",
    "SitePolicies",
    "StringMatch",
    "builtin_names",
    "check_site_policies",
    "deep_merge",
    "field_path",
    "format_duration",
    "load_policy",
    "parse_duration",
    "parse_policy_document",
    "policy_names",
]

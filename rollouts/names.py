"""Kubernetes name rules, checked before a name reaches a query, a patch or a key.

Names of namespaces, Knative Services and Revisions are DNS-1123 labels. Checking them at the
edge (API, CLI, analyzer) is what keeps user input out of PromQL and Redis keys unescaped.
"""

from __future__ import annotations

import re

from rollouts.errors import ValidationError

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL_MAX = 63


def dns1123_label_problem(value: str) -> str | None:
    """Why `value` is not a DNS-1123 label, or None when it is one."""
    if not value:
        return "must not be empty"
    if len(value) > DNS1123_LABEL_MAX:
        return f"must be at most {DNS1123_LABEL_MAX} characters, got {len(value)}"
    if not DNS1123_LABEL.match(value):
        return (
            f"{value!r} is not a valid name: lower-case letters, digits and '-',"
            " starting and ending with a letter or digit"
        )
    return None


def require_dns1123_label(value: str, field: str) -> str:
    """`value` itself, or a ValidationError naming `field`."""
    problem = dns1123_label_problem(value)
    if problem:
        raise ValidationError.single(field, problem)
    return value

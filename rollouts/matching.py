"""A match step's requests as the routers read them: the policy's `RequestMatchSpec` as a tuple
of `RequestMatch` conditions, all of which must hold. Pure."""

from __future__ import annotations

from policies import RequestMatchSpec
from rollouts.actions import RequestMatch


def request_matches(spec: RequestMatchSpec) -> tuple[RequestMatch, ...]:
    found = [RequestMatch("header", m.value, name.lower(), m.how) for name, m in spec.headers.items()]
    if spec.uri is not None:
        found.append(RequestMatch("uri", spec.uri.value, "", spec.uri.how))
    found += [RequestMatch("query", m.value, name, m.how) for name, m in spec.query_params.items()]
    found += [RequestMatch("cookie", value, name) for name, value in spec.cookie.items()]
    if spec.method is not None:
        found.append(RequestMatch("method", spec.method))
    if spec.tag is not None:
        found.append(RequestMatch("tag", spec.tag))
    return tuple(found)

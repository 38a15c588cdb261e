"""Request-content steps: a policy step that sends only matching requests to the canary.

`steps: [{match: {headers: {end-user: {exact: jason}}}}, 5, 25, 50]` first lets only the requests
with `end-user: jason` reach the canary (the stable keeps everything else), judged like any
step, then moves on to weights. A match supports what Istio's `HTTPMatchRequest` supports for
`headers` (exact, prefix, regex), `uri` (exact, prefix, regex) and `query_params`, plus
`cookie: {name: value}`, shorthand for a regex on the Cookie header. All conditions of one match
must hold. Targets that cannot route by request content refuse such steps at registration.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_FROZEN = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

HeaderName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")]
"""An HTTP header name (an RFC 9110 token)."""
ParamName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\s&=#]+$")]
CookieName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")]
Value = Annotated[str, Field(max_length=1024)]
TagName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
"""A Knative traffic tag: a DNS-1123 label (it becomes part of a host name)."""


class StringMatch(BaseModel):
    """Exactly one of `exact`, `prefix` or `regex` (RE2 syntax, matching the whole value)."""

    model_config = _FROZEN

    exact: Value | None = None
    prefix: Value | None = None
    regex: Value | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> StringMatch:
        given = [kind for kind in ("exact", "prefix", "regex") if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError("needs exactly one of exact, prefix or regex")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from exc
        return self

    @property
    def how(self) -> str:
        return next(kind for kind in ("exact", "prefix", "regex") if getattr(self, kind) is not None)

    @property
    def value(self) -> str:
        return str(getattr(self, self.how))


class RequestMatchSpec(BaseModel):
    """The requests a match step sends to the canary: every condition given must hold."""

    model_config = _FROZEN

    headers: dict[HeaderName, StringMatch] = Field(default_factory=dict, max_length=16)
    """By header name (case does not matter), e.g. {"end-user": {"exact": "jason"}}."""
    uri: StringMatch | None = None
    """The request path, e.g. {"prefix": "/beta"}."""
    query_params: dict[ParamName, StringMatch] = Field(default_factory=dict, max_length=16)
    """By query parameter, e.g. {"canary": {"exact": "1"}}."""
    cookie: dict[CookieName, Value] = Field(default_factory=dict, max_length=16)
    """Cookie name to exact value, e.g. {"beta": "yes"} (a regex on the Cookie header underneath)."""
    method: Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"] | None = None
    """The HTTP method, e.g. "GET" (Istio and Gateway API targets)."""
    tag: TagName | None = None
    """Knative targets: only requests to the canary's tag (its tag URL, or the main URL with the
    `Knative-Serving-Tag` header) reach the canary. It stands alone, and names the policy's `canary_tag`."""

    @model_validator(mode="after")
    def _something(self) -> RequestMatchSpec:
        if self.tag is not None and (self.headers or self.uri or self.query_params or self.cookie or self.method):
            raise ValueError("a tag match stands alone: Knative routes a tag by its URL or header, nothing else")
        if not (self.headers or self.uri or self.query_params or self.cookie or self.method or self.tag):
            raise ValueError("a match needs at least one of headers, uri, query_params, cookie, method or tag")
        return self

    def describe(self) -> str:
        """In words, for step messages: `header end-user = jason, uri prefix /beta`."""
        words = {"exact": "=", "prefix": "starts with", "regex": "matches"}
        parts = [f"header {name} {words[m.how]} {m.value}" for name, m in self.headers.items()]
        if self.uri is not None:
            parts.append(f"uri {words[self.uri.how]} {self.uri.value}")
        parts += [f"query {name} {words[m.how]} {m.value}" for name, m in self.query_params.items()]
        parts += [f"cookie {name} = {value}" for name, value in self.cookie.items()]
        if self.method is not None:
            parts.append(f"method {self.method}")
        if self.tag is not None:
            parts.append(f"tag {self.tag} (its URL or Knative-Serving-Tag header)")
        return ", ".join(parts)


class MatchStep(BaseModel):
    """A step during which only matching requests reach the canary (its weight is 0 otherwise)."""

    model_config = _FROZEN

    match: RequestMatchSpec

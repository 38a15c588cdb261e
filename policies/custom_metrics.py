"""A policy's own PromQL for a version's requests and latency: the `custom` metrics dialect.

Many services are measured by their own or their ingress's series, not queue-proxy's or
Istio's. A policy then gives two query templates, with placeholders the analyzer fills for
every due rollout at once:

- `$namespace`: the namespaces of the batch; `$versions`: the versions (revisions, subsets,
  backend Services) of the batch. Each stands for the whole value of a label matcher,
  `version=~"$versions"` (or `="$versions"`: both mean "one of these", as the value becomes an
  alternation of every due rollout's names), or, braced, for a group inside the regex of an `=~`
  matcher: `envoy_cluster_name=~"${namespace}_${versions}_[0-9]+"`;
- `$window`: the interval, as the whole of a range selector, `[$window]`.

The templates are checked here, when the policy is loaded, by a small PromQL lexer: brackets
nest and close, strings end, only these placeholders appear and only where they are safe, and
every `by (...)` keeps the labels the results are read by. The names filled in later are
checked to be DNS-1123 labels and escaped (`analyzer.dialects`), so no policy can inject
anything into a query. Prometheus itself still judges the rest of the syntax; a query it refuses
rolls the rollout back with its message, never promotes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

_FROZEN = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

LabelName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]
"""A Prometheus label name."""
Template = Annotated[str, Field(min_length=1, max_length=4096)]

PLACEHOLDERS = ("namespace", "versions", "window")
"""What a template may name: `$namespace`, `$versions` (label values) and `$window` (a range)."""
LIST_PLACEHOLDERS = ("namespace", "versions")


class CustomMetrics(BaseModel):
    """Per-version request counts by status, and latency buckets, from any Prometheus series."""

    model_config = _FROZEN

    version_label: LabelName = "version"
    """The result label that carries the version's name (a revision, subset or backend Service)."""
    status_label: LabelName = "code"
    """The result label that carries the status: a code (`503`) or a class (`5xx`, `5`)."""
    namespace_label: LabelName | Literal[""] = "namespace"
    """The result label that carries the namespace; empty when versions are unique across namespaces."""
    latency_unit: Literal["seconds", "milliseconds"] = "seconds"
    """The unit of the buckets' `le`."""
    requests: Template
    """Requests per version and status over `$window`, e.g. `sum by (namespace, version, code)
    (increase(http_requests_total{namespace="$namespace", version=~"$versions"}[$window]))`."""
    latency_buckets: Template | None = None
    """Cumulative latency buckets per version and `le` over `$window` (omit it to judge errors only)."""

    @field_validator("requests", "latency_buckets")
    @classmethod
    def _template_is_sound(cls, template: str | None, info: ValidationInfo) -> str | None:
        if template is None:
            return None
        keys = [str(info.data.get("version_label", "version"))]
        if namespace := info.data.get("namespace_label", "namespace"):
            keys.append(str(namespace))
        keys.append(str(info.data.get("status_label", "code")) if info.field_name == "requests" else "le")
        check_template(template, tuple(keys))
        return template

    @property
    def ms_per_unit(self) -> float:
        return 1000.0 if self.latency_unit == "seconds" else 1.0


class TemplateError(ValueError):
    """A template that is not sound (pydantic reports it under the template's field)."""


@dataclass(frozen=True)
class Token:
    kind: str
    """`string`, `placeholder`, `ident`, `number`, `op`, `open`, `close` or `other`."""
    text: str
    at: int


_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
  | (?P<placeholder>\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>[0-9][0-9A-Za-z_.]*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:.]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^=<>,@])
  | (?P<open>[({\[])
  | (?P<close>[)}\]])
    """,
    re.VERBOSE,
)
_PAIRS = {"(": ")", "{": "}", "[": "]"}


def tokenize(template: str) -> list[Token]:
    """PromQL's tokens, enough to check where placeholders stand; an unknown character is refused."""
    tokens: list[Token] = []
    position = 0
    while position < len(template):
        found = _TOKEN.match(template, position)
        if found is None:
            rest = template[position:]
            if rest[0] in "\"'`":
                raise TemplateError(f"the string at character {position + 1} does not end")
            raise TemplateError(f"unexpected {rest[0]!r} at character {position + 1}")
        kind = found.lastgroup or "other"
        if kind != "space":
            tokens.append(Token(kind, found.group(), position))
        position = found.end()
    return tokens


def check_template(template: str, kept_labels: tuple[str, ...]) -> None:
    """Refuse a template that is malformed, misplaces a placeholder or groups its result away."""
    tokens = tokenize(template)
    _check_nesting(tokens)
    used: set[str] = set()
    for index, token in enumerate(tokens):
        if token.kind == "placeholder":
            name = token.text[1:]
            if name not in PLACEHOLDERS:
                known = ", ".join(f"${p}" for p in PLACEHOLDERS)
                raise TemplateError(f"unknown placeholder {token.text} (known: {known})")
            if name != "window" or not _is_range(tokens, index):
                raise TemplateError(
                    f'{token.text} belongs in a quoted label value, e.g. label=~"{token.text}"'
                    if name in LIST_PLACEHOLDERS
                    else "$window is only the whole of a range selector, e.g. [$window]"
                )
            used.add(name)
        elif token.kind == "string" and "$" in token.text:
            used |= _string_placeholders(tokens, index)
        elif token.kind == "ident" and token.text in ("by", "without"):
            _check_grouping(tokens, index, kept_labels)
    if "versions" not in used:
        raise TemplateError('must select by $versions (e.g. version=~"$versions"), so it reads just the due versions')
    if "window" not in used:
        raise TemplateError("must range over $window (e.g. [$window]), so it reads just the interval judged")


def _check_nesting(tokens: list[Token]) -> None:
    open_: list[Token] = []
    for token in tokens:
        if token.kind == "open":
            open_.append(token)
        elif token.kind == "close":
            if not open_ or _PAIRS[open_[-1].text] != token.text:
                raise TemplateError(f"{token.text!r} at character {token.at + 1} closes nothing open")
            open_.pop()
    if open_:
        raise TemplateError(f"{open_[-1].text!r} at character {open_[-1].at + 1} is never closed")


def _is_range(tokens: list[Token], index: int) -> bool:
    return 0 < index < len(tokens) - 1 and tokens[index - 1].text == "[" and tokens[index + 1].text == "]"


PLACEHOLDER_IN_TEXT = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
"""`$name` or `${name}` inside a string (`$1` and `${1}`, label_replace's groups, are not placeholders)."""


def _string_placeholders(tokens: list[Token], index: int) -> set[str]:
    """A list placeholder is the whole value of an `=` or `=~` matcher, or `${name}` inside the
    regex of an `=~` matcher (it becomes a group of the batch's names); elsewhere `$` is text."""
    token = tokens[index]
    inner = token.text[1:-1]
    found = [(m.group(0), m.group(1) or m.group(2)) for m in PLACEHOLDER_IN_TEXT.finditer(inner)]
    if not found:
        return set()  # `$1` in label_replace's replacement, a literal dollar
    for written, name in found:
        if name not in LIST_PLACEHOLDERS:
            raise TemplateError(
                f"unknown placeholder {written} in {token.text} (a label value may hold $namespace or $versions)"
            )
    operator = tokens[index - 1] if index >= 2 else None
    label = tokens[index - 2] if index >= 2 else None
    whole = len(found) == 1 and inner == found[0][0]
    if token.text[0] != '"' or operator is None or label is None or label.kind != "ident":
        raise TemplateError(f"a placeholder belongs in a double-quoted label matcher's value, not {token.text}")
    if whole and operator.text not in ("=", "=~"):
        raise TemplateError(f"{token.text} must be matched with = or =~ (it stands for any of the batch's names)")
    if not whole:
        if operator.text != "=~":
            raise TemplateError(f"{token.text}: placeholders inside a value need a regex matcher, =~")
        bare = [written for written, _ in found if not written.startswith("${")]
        if bare:
            raise TemplateError(f"{token.text}: inside a regex write {bare[0][0]}{{{bare[0][1:]}}}, braced")
    return {name for _, name in found}


def _check_grouping(tokens: list[Token], index: int, kept_labels: tuple[str, ...]) -> None:
    """`by (...)` keeps every label the results are read by; `without (...)` drops none of them."""
    if index + 1 >= len(tokens) or tokens[index + 1].text != "(":
        return  # `by` as a metric or label name
    labels: list[str] = []
    for token in tokens[index + 2 :]:
        if token.text == ")":
            break
        if token.kind == "ident":
            labels.append(token.text)
    clause = tokens[index].text
    if clause == "by":
        missing = [label for label in kept_labels if label not in labels]
        if missing:
            raise TemplateError(f"`by ({', '.join(labels)})` drops {', '.join(missing)}, which the results are read by")
    else:
        dropped = [label for label in kept_labels if label in labels]
        if dropped:
            raise TemplateError(
                f"`without ({', '.join(labels)})` drops {', '.join(dropped)}, which the results are read by"
            )

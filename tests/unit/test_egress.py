"""Where a rollout's own notification targets may send requests (the SSRF rules)."""

from __future__ import annotations

import pytest

from policies import EgressRules, InvalidPolicy, load_policy

PUBLIC = {"hooks.example.com": ["93.184.215.14"], "hooks.slack.com": ["34.226.36.50"]}


def resolve(host: str) -> list[str]:
    if host in PUBLIC:
        return PUBLIC[host]
    private = {"internal.example.com": "10.1.2.3", "meta.example.com": "169.254.169.254", "v6.example.com": "::1"}
    if host in private:
        return [private[host]]
    raise OSError("Name or service not known")


@pytest.mark.parametrize(
    ("allowed", "url", "problem"),
    [
        pytest.param(
            "",
            "https://hooks.example.com/x",
            "is not allowed (AUTOCANARY_NOTIFY_ALLOWED_HOSTS: none)",
            id="nothing-allowed-by-default",
        ),
        pytest.param("hooks.slack.com", "https://hooks.example.com/x", "is not allowed", id="other-host"),
        pytest.param("*.example.com", "https://hooks.example.com/x", None, id="wildcard"),
        pytest.param("*.example.com", "https://example.com.evil.net/x", "is not allowed", id="suffix-trick"),
        pytest.param(
            "*.example.com",
            "http://internal.example.com/",
            "resolves to 10.1.2.3, a private address",
            id="private-after-dns",
        ),
        pytest.param("*.example.com,10.0.0.0/8", "http://internal.example.com/", None, id="private-explicitly-allowed"),
        pytest.param("hooks.example.com", "http://127.0.0.1:6391/", "is not allowed", id="redis-on-loopback"),
        pytest.param("127.0.0.0/8", "http://127.0.0.1:6391/", None, id="loopback-explicitly-allowed"),
        pytest.param("*.example.com", "http://meta.example.com/latest", "169.254.169.254, a link-local", id="metadata"),
        pytest.param("*.example.com", "http://v6.example.com:8080/", "::1, a loopback address", id="ipv6-loopback"),
        pytest.param("*.example.com", "https://nowhere.example.com/", "does not resolve", id="unresolvable"),
    ],
)
def test_a_rollout_target_must_be_allowed_and_resolve_to_public_addresses(
    allowed: str, url: str, problem: str | None
) -> None:
    found = EgressRules.parse(allowed).problem(url, resolve)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_a_malformed_allowed_host_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="'http://x' is not a host"):
        EgressRules.parse("hooks.slack.com, http://x")


@pytest.mark.parametrize("name", ["AUTOCANARY_REDIS_URL", "HOME", "AUTOCANARY_NOTIFY_SECRET_"])
def test_secret_env_may_only_name_notification_secrets(name: str) -> None:
    with pytest.raises(InvalidPolicy, match=r"notifications\[0\]\.secret_env"):
        load_policy(
            "default", {"notifications": [{"kind": "webhook", "url": "https://h.example.com", "secret_env": name}]}
        )
    target = {"kind": "webhook", "url": "https://h.example.com", "secret_env": "AUTOCANARY_NOTIFY_SECRET_DEPLOY"}
    assert load_policy("default", {"notifications": [target]}).notifications[0].secret_env.endswith("DEPLOY")  # type: ignore[union-attr]

"""Where notifications may go, and which secrets they may be signed with.

A rollout's inline policy overrides come from any deployer token; a notification target there
makes a worker send a request, so it must not reach what the installation did not allow (Redis
on loopback, the cloud metadata address, the cluster's private services) nor sign with an
arbitrary environment variable (`AUTOCANARY_REDIS_URL`, which may hold a password):

- `AUTOCANARY_NOTIFY_ALLOWED_HOSTS` lists the hosts such a target may name: `hooks.slack.com`,
  `*.example.com` (any subdomain), or an IP network (`10.20.0.0/16`). Empty by default: only the
  installation's own policies (built-in and site) and its global targets notify.
- A host must also resolve only to public addresses; a loopback, link-local, private or reserved
  address is refused unless an allowed network contains it. Checked at registration and again
  before each delivery, after DNS resolution, so a name that later resolves elsewhere is refused.
- `secret_env` may only name variables starting with `SECRET_ENV_PREFIX`.

Pure: the resolver is passed in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

SECRET_ENV_PREFIX = "AUTOCANARY_NOTIFY_SECRET_"  # noqa: S105 (a name prefix, not a secret)

Resolve = Callable[[str], Sequence[str]]
"""A host name to its addresses (raises OSError when it does not resolve)."""

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class EgressRules:
    hosts: tuple[str, ...] = ()
    """Exact host names, or `*.suffix` for any subdomain of suffix."""
    networks: tuple[IpNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> EgressRules:
        """From the comma-separated setting; a malformed entry raises ValueError naming it."""
        hosts: list[str] = []
        networks: list[IpNetwork] = []
        for entry in (part.strip().lower() for part in (text or "").split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            name = entry.removeprefix("*.")
            if not name or "/" in name or ":" in name or not all(label for label in name.split(".")):
                raise ValueError(f"AUTOCANARY_NOTIFY_ALLOWED_HOSTS: {entry!r} is not a host, *.domain or network")
            hosts.append(entry)
        return cls(tuple(hosts), tuple(networks))

    def host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for allowed in self.hosts:
            if allowed.startswith("*.") and host.endswith(allowed[1:]):
                return True
            if host == allowed:
                return True
        address = _address(host)
        return address is not None and self._in_networks(address)

    def problem(self, url: str, resolve: Resolve) -> str | None:
        """Why a rollout's target may not receive requests, or None when it may."""
        host = urlsplit(url).hostname
        if not host:
            return "has no host"
        if not self.host_allowed(host):
            listed = ", ".join((*self.hosts, *map(str, self.networks))) or "none"
            return f"host {host!r} is not allowed (AUTOCANARY_NOTIFY_ALLOWED_HOSTS: {listed})"
        try:
            addresses = [host] if _address(host) is not None else list(resolve(host))
        except OSError as exc:
            return f"host {host!r} does not resolve ({exc})"
        if not addresses:
            return f"host {host!r} does not resolve"
        for text in addresses:
            address = _address(text)
            if address is None:
                return f"host {host!r} resolves to {text!r}, not an address"
            if not address.is_global and not self._in_networks(address):
                return f"host {host!r} resolves to {address}, a {_kind(address)} address that is not allowed"
        return None

    def _in_networks(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address.version == network.version and address in network for network in self.networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]").split("%")[0])
    except ValueError:
        return None


def _kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    for kind in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return "non-public"

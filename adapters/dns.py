"""Host names to addresses, for the notification egress check (`policies.egress`)."""

from __future__ import annotations

import socket


def resolve(host: str) -> list[str]:
    """Every address `host` resolves to (raises OSError when it does not resolve)."""
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)})

"""Where to listen: ``HOST:PORT`` parsing and the loopback test.

``aioproc run`` checks ``--http`` with these (through ``aioproc.http``) before
anything starts, so a bad address is a one-line error.
"""

from __future__ import annotations

import ipaddress

from .._util import is_number

__all__ = ["is_loopback", "parse_address"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) can only be reached from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it could resolve to anything


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100``; ``:9100`` means 127.0.0.1) -> (host, port); ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not is_number(port) or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (like 127.0.0.1:9100)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "127.0.0.1", int(port)

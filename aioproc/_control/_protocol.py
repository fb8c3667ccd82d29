"""The control protocol: JSON lines over a unix stream socket (``docs/control.md``).

A client sends one JSON object per line, a *request*; the server answers each with
one JSON object per line, a *reply* (``logs`` and ``shutdown`` may send more lines
after it). Every object carries ``"version": 1``. A request names what it wants in
``"request"``; a reply says ``"ok": true`` or ``"ok": false`` with an ``"error"``
code and a one-line ``"message"``.

Bounds: a request line is at most :data:`MAX_LINE` bytes (longer: error
``too-long``, connection closed); a client gets :data:`REQUEST_TIMEOUT` seconds
to send each request line (else error ``timeout``, connection closed); at most
:data:`MAX_CLIENTS` connections are served at once (more: error ``busy``).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "ERRORS",
    "MAX_CLIENTS",
    "MAX_LINE",
    "REQUESTS",
    "REQUEST_TIMEOUT",
    "VERSION",
    "ControlError",
    "encode",
    "error_reply",
]

#: The protocol version, in every request and reply.
VERSION = 1

#: The longest request line the server reads, newline included (bytes).
MAX_LINE = 65536

#: Seconds a client has to send each request line once connected.
REQUEST_TIMEOUT = 10.0

#: Connections served at once; others get error ``busy`` and are closed.
MAX_CLIENTS = 64

REQUESTS = (
    "status",
    "start",
    "stop",
    "restart",
    "signal",
    "logs",
    "reload",
    "reopen",
    "shutdown",
)

#: Every error code a reply can carry, and when.
ERRORS = {
    "bad-request": "the line is not a JSON object, or a field has the wrong type",
    "unsupported-version": "the request's version is not one the server speaks",
    "unknown-request": "the request names nothing the server knows",
    "unknown-service": "a name given is not a service of this supervisor",
    "failed": "the operation could not be done (the message says why)",
    "unsupported": "this server cannot do that (reload without a configuration file)",
    "shutting-down": "the supervisor is shutting down",
    "forbidden": "the peer's uid is neither root nor the supervisor's",
    "too-long": f"the request line is longer than {MAX_LINE} bytes",
    "timeout": f"no complete request line within {REQUEST_TIMEOUT:g} seconds",
    "busy": f"{MAX_CLIENTS} connections are being served already",
}


class ControlError(Exception):
    """An error reply from a control endpoint (``code`` from :data:`ERRORS`), or a
    failure to reach one (``code`` ``"unreachable"``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode(obj: dict[str, Any]) -> bytes:
    """One protocol line: ``obj`` with the version, as compact JSON, newline ended."""
    return (json.dumps({"version": VERSION, **obj}, separators=(",", ":")) + "\n").encode()


def error_reply(code: str, message: str) -> bytes:
    return encode({"ok": False, "error": code, "message": message})

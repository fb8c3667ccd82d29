"""Serve a supervisor over HTTP: a JSON API, Prometheus metrics, probes and a status page.

For an embedded :class:`~aioproc.supervisor.Supervisor`::

    from aioproc import http

    async with sup, http.serve(sup, "127.0.0.1", 9100) as server:
        print("status page at", server.url)
        await sup.wait()

A non-loopback ``host`` needs a ``token`` (then every request but the page
carries ``Authorization: Bearer TOKEN``). Needs the ``http`` extra
(``pip install 'aioproc-linux[http]'``: aiohttp and prometheus_client). See
``docs/http.md``.
"""

from __future__ import annotations

from ._util import fixup_module_metadata as _fixup_module_metadata

try:
    import aiohttp as _aiohttp  # noqa: F401
    import prometheus_client as _prometheus_client  # noqa: F401
except ImportError as _exc:  # pragma: no cover - the extra is installed in tests
    raise ImportError(
        f"aioproc.http needs the http extra: pip install 'aioproc-linux[http]' ({_exc})"
    ) from _exc

from ._control._operations import Log, Reload
from ._http._server import (
    CLIENT_MAX_SIZE,
    HEADER_TIMEOUT,
    MAX_CONNECTIONS,
    WRITE_TIMEOUT,
    HttpServer,
    is_loopback,
    parse_address,
)
from .supervisor import Supervisor

__all__ = [
    "CLIENT_MAX_SIZE",
    "HEADER_TIMEOUT",
    "MAX_CONNECTIONS",
    "WRITE_TIMEOUT",
    "HttpServer",
    "is_loopback",
    "parse_address",
    "serve",
]


def serve(
    supervisor: Supervisor,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    token: str | None = None,
    reload: Reload | None = None,
    log: Log | None = None,
    header_timeout: float = HEADER_TIMEOUT,
    write_timeout: float = WRITE_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
) -> HttpServer:
    """Serve ``supervisor`` at ``host:port`` (0: any free port): ``async with serve(...)``.

    Enter it before the supervisor to see the reason of every state change.
    ``reload`` is what ``POST /api/v1/reload`` calls (see
    :func:`aioproc.control.serve`). Raises :class:`ValueError` at once for a
    non-loopback ``host`` without a ``token``, and :class:`OSError` on entering
    if the address cannot be bound.
    """
    return HttpServer(
        supervisor,
        host,
        port,
        token=token,
        reload=reload,
        log=log,
        header_timeout=header_timeout,
        write_timeout=write_timeout,
        max_connections=max_connections,
    )


_fixup_module_metadata(__name__, globals(), private="aioproc._http")

"""Operate a running supervisor from outside: the control endpoint ``aioproc ctl`` uses.

Serve an embedded :class:`~aioproc.supervisor.Supervisor`'s endpoint::

    from aioproc import control

    async with control.serve(sup, "/run/myapp/aioproc.sock"):
        await sup.wait()

and talk to one with :class:`Client` (blocking) or ``aioproc ctl --control PATH``.
The socket is created mode 0600; every peer is checked with ``SO_PEERCRED``
(root and the supervisor's own uid only). See ``docs/control.md``.
"""

from __future__ import annotations

from ._control._client import Client
from ._control._protocol import (
    ERRORS,
    MAX_CLIENTS,
    MAX_LINE,
    REQUEST_TIMEOUT,
    VERSION,
    ControlError,
)
from ._control._server import ControlServer, serve
from ._control._socket import SocketInUse
from ._util import fixup_module_metadata as _fixup_module_metadata

__all__ = [
    "ERRORS",
    "MAX_CLIENTS",
    "MAX_LINE",
    "REQUEST_TIMEOUT",
    "VERSION",
    "Client",
    "ControlError",
    "ControlServer",
    "SocketInUse",
    "serve",
]


_fixup_module_metadata(__name__, globals(), private="aioproc._control")

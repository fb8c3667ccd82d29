"""A small blocking client of the control protocol (what ``aioproc ctl`` uses)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from ._protocol import VERSION, ControlError
from ._socket import connect, peer_credentials

__all__ = ["Client"]


class Client:
    """One connection to a control endpoint: ``with Client(path) as c: c.request("status")``.

    Raises :class:`ControlError` with code ``"unreachable"`` when nothing answers
    at ``path``, ``"untrusted"`` when what answers is not a supervisor we may
    believe (:func:`check_server`), and with the reply's code for an error reply.
    ``timeout`` bounds each wait for a reply (None: no bound, as ``logs --follow``
    needs).
    """

    def __init__(self, path: str | os.PathLike[str], timeout: float | None = 30.0) -> None:
        self.path = os.fspath(path)
        try:
            self._sock = connect(self.path, timeout)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(
                "unreachable", f"no supervisor answers at {self.path} (is 'aioproc run' running?)"
            ) from None
        except OSError as exc:
            raise ControlError("unreachable", f"{self.path}: {exc.strerror or exc}") from None
        try:
            check_server(self._sock, self.path)
        except BaseException:
            self._sock.close()
            raise
        self._file = self._sock.makefile("rb")

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def send(self, request: str, **fields: Any) -> None:
        line = json.dumps({"version": VERSION, "request": request, **fields}) + "\n"
        try:
            self._sock.sendall(line.encode())
        except OSError as exc:
            raise ControlError("unreachable", f"{self.path}: {exc.strerror or exc}") from None

    def receive(self) -> dict[str, Any] | None:
        """The next reply line as an object; None at EOF. Raises on an error reply."""
        try:
            raw = self._file.readline()
        except TimeoutError:
            raise ControlError("unreachable", f"{self.path}: no reply in time") from None
        except OSError as exc:
            raise ControlError("unreachable", f"{self.path}: {exc.strerror or exc}") from None
        if not raw:
            return None
        try:
            reply = json.loads(raw)
        except ValueError:
            raise ControlError("bad-reply", f"{self.path}: not a control reply") from None
        if not isinstance(reply, dict):
            raise ControlError("bad-reply", f"{self.path}: not a control reply")
        if reply.get("ok") is False:
            raise ControlError(str(reply.get("error")), str(reply.get("message")))
        return reply

    def request(self, request: str, **fields: Any) -> dict[str, Any]:
        """Send one request; its reply."""
        self.send(request, **fields)
        reply = self.receive()
        if reply is None:
            raise ControlError("unreachable", f"{self.path}: the supervisor closed the connection")
        return reply

    def replies(self) -> Iterator[dict[str, Any]]:
        """The reply lines that follow, until EOF (``logs``, ``shutdown``)."""
        while True:
            reply = self.receive()
            if reply is None:
                return
            yield reply


def check_server(sock: socket.socket, path: str) -> None:
    """Refuse a server that cannot be the supervisor we mean to talk to.

    A socket in a directory that others can write to (``/tmp``, a shared project
    directory) may have been put there by anyone, and would then be told our
    requests and answer them as it likes. The kernel says who listens on it
    (``SO_PEERCRED``, recorded at ``listen()``): a real supervisor serves only
    root and its own uid, so for anyone else that must be root or ourselves. Root
    also talks to supervisors that other users run, in their own directories: it
    accepts as well the uid that owns the socket's directory.
    """
    _, uid, _ = peer_credentials(sock)
    me = os.geteuid()
    if uid in (0, me):
        return
    if me == 0:
        try:
            owner = os.stat(os.path.dirname(os.path.abspath(path))).st_uid
        except OSError:
            owner = -1
        if uid == owner:
            return
        whom = "root, nor the owner of its directory"
    else:
        whom = "root, nor you"
    raise ControlError(
        "untrusted",
        f"{path} is served by uid {uid}, which is neither {whom}: not talking to it",
    )

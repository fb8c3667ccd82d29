"""A small blocking client of the control protocol (what ``aioproc ctl`` uses)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from ._protocol import VERSION, ControlError
from ._socket import connect

__all__ = ["Client"]


class Client:
    """One connection to a control endpoint: ``with Client(path) as c: c.request("status")``.

    Raises :class:`ControlError` with code ``"unreachable"`` when nothing answers
    at ``path``, and with the reply's code for an error reply. ``timeout`` bounds
    each wait for a reply (None: no bound, as ``logs --follow`` needs).
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

"""The control socket in the file system: created safely, found stale, removed.

Creating it 0600 with no window
===============================

``bind()`` creates the socket file with mode ``0777 & ~umask``, and anyone who
may write to a socket file may connect. Two ways close that window: set the
umask to 077 around ``bind()``, or bind where nobody else can reach and only
then publish. The umask is process-wide: a spawn worker thread creating a file
at that moment would get it too, so we do the second: bind inside a fresh
``mkdtemp()`` directory (mode 0700, beside the target so it is on the same file
system), ``chmod`` the socket to 0600, ``listen()``, and publish it with
``link()``, which is atomic and fails if the name exists. The private directory
is removed at once. From its first moment at its public name the socket is
0600 and listening.

Stale and live sockets
======================

If the name exists, we connect to it: refused means a crashed run left it
(stale), so it is unlinked and the ``link()`` retried; accepted means another
supervisor serves it: :class:`SocketInUse`. Something that is not a socket is
never removed. (Two runs that find the same stale socket at the same moment
could both decide it is stale; the ``link()`` lets only one of them publish, and
the other then finds a live socket.)

Long paths
==========

``sockaddr_un`` holds 107 bytes of path. A longer path is reached through
``/proc/self/fd/N/NAME`` with ``N`` an ``O_PATH`` descriptor of its directory
(Linux resolves the magic link during ``bind``/``connect``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct
import tempfile
from collections.abc import Iterator

__all__ = [
    "ControlSocket",
    "SocketInUse",
    "bind_control_socket",
    "connect",
    "peer_credentials",
]

_SUN_PATH_MAX = 107


class SocketInUse(Exception):
    """Another process serves (or owns) the control socket at this path."""


@contextlib.contextmanager
def _address(path: str) -> Iterator[str]:
    """``path``, or a short ``/proc/self/fd`` alias of it when it is too long."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield path
        return
    parent, name = os.path.split(path)
    fd = os.open(parent or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)


def connect(path: str | os.PathLike[str], timeout: float | None = None) -> socket.socket:
    """A blocking connection to the control socket at ``path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        with _address(os.fspath(path)) as address:
            sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _is_live(path: str) -> bool:
    """Whether a process accepts connections at ``path`` (refused: a stale socket)."""
    try:
        connect(path, timeout=2.0).close()
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as exc:  # EACCES (someone else's), a timeout (a wedged server)...
        raise SocketInUse(f"{path}: in use ({exc.strerror or exc})") from None
    return True


class ControlSocket:
    """A listening control socket published at ``path``; :meth:`close` removes it."""

    def __init__(self, sock: socket.socket, path: str, identity: tuple[int, int]) -> None:
        self.sock = sock
        self.path = path
        self._identity = identity

    def close(self) -> None:
        """Close the socket and remove its file, unless the file is no longer ours.

        A file another run put there since (it found ours stale) is left alone:
        the file's inode is compared with the one we published.
        """
        self.sock.close()
        with contextlib.suppress(OSError):
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                os.unlink(self.path)


def bind_control_socket(path: str | os.PathLike[str], backlog: int = 64) -> ControlSocket:
    """A listening unix socket at ``path``, mode 0600, published atomically.

    Raises :class:`SocketInUse` when a live socket (or anything not a socket) is
    at ``path``; a stale socket is replaced. See the module docstring.
    """
    target = os.path.abspath(os.fspath(path))
    private = tempfile.mkdtemp(prefix=".aioproc-", dir=os.path.dirname(target))
    temp = os.path.join(private, "s")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        with _address(temp) as address:
            sock.bind(address)
        os.chmod(temp, 0o600)
        sock.listen(backlog)
        st = os.lstat(temp)
        for _ in range(3):
            try:
                os.link(temp, target)
                break
            except FileExistsError:
                try:
                    mode = os.lstat(target).st_mode
                except FileNotFoundError:
                    continue
                if not stat.S_ISSOCK(mode):
                    raise SocketInUse(f"{target}: exists and is not a socket") from None
                if _is_live(target):
                    raise SocketInUse(
                        f"{target}: another supervisor is serving this control socket"
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(target)  # stale: its supervisor is gone
        else:
            raise SocketInUse(f"{target}: another supervisor keeps creating it")
    except BaseException:
        sock.close()
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        os.rmdir(private)
    return ControlSocket(sock, target, (st.st_dev, st.st_ino))


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process that connected (``SO_PEERCRED``).

    The kernel records them at ``connect()``: the peer cannot lie about them.
    """
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid

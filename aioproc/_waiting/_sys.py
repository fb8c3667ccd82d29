"""The Linux system calls behind child waiting, in one place.

``waitid`` is called through :mod:`ctypes` where it can be, because Python's
``os.waitid`` does not return the ``rusage`` that the raw system call fills in,
and in pidfd mode we must reap through the pidfd (``P_PIDFD``), never by PID, so
``os.wait4`` is not an option there. Where ctypes or the system-call number is
not available, :func:`waitid` falls back to ``os.waitid`` and reports no rusage.

A small optional C module, ``_waitid`` (``_waitid.c``, built at install time
where a compiler is at hand), makes the same call without ctypes' per-call
cost; :func:`waitid` uses it when it was built, unless ``AIOPROC_NO_C_WAITID=1``
is set in the environment. :func:`waitid_ctypes` is the fallback, kept callable
so the tests can hold the two to the same results.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import os
import platform
import resource
import signal
import struct
import sys
import threading
from collections.abc import Callable
from typing import NamedTuple

__all__ = [
    "C_WAITID",
    "PIDFD_FLOOR",
    "P_PID",
    "P_PIDFD",
    "WaitResult",
    "out_of_the_way",
    "pidfd_open",
    "pidfd_send_signal",
    "waitid",
    "waitid_ctypes",
]

P_PID: int = getattr(os, "P_PID", 1)
P_PIDFD: int = getattr(os, "P_PIDFD", 3)

# waitid's system-call number, per architecture (arch/*/include/uapi/asm/unistd*.h).
_SYS_WAITID = {
    "x86_64": 247,
    "amd64": 247,
    "aarch64": 95,
    "arm64": 95,
    "riscv64": 95,
    "loongarch64": 95,
    "i386": 284,
    "i686": 284,
    "armv7l": 280,
    "ppc64le": 272,
    "ppc64": 272,
    "s390x": 281,
}.get(platform.machine())

# si_code values for SIGCHLD (include/uapi/asm-generic/siginfo.h).
CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3


class WaitResult(NamedTuple):
    pid: int
    code: int  # CLD_EXITED, CLD_KILLED or CLD_DUMPED
    status: int  # exit code, or signal number
    # The kernel's struct rusage as raw bytes (see rusage_from_raw), or None.
    # Decoding costs a few microseconds that would sit between a child's exit
    # and the wake-up of its waiters, so it is left to whoever reads it.
    rusage: bytes | None


# The 14 long fields of struct rusage after the two timevals, in kernel order;
# resource.struct_rusage has them in the same order under these names.
_RUSAGE_LONGS = (
    "ru_maxrss", "ru_ixrss", "ru_idrss", "ru_isrss", "ru_minflt", "ru_majflt", "ru_nswap",
    "ru_inblock", "ru_oublock", "ru_msgsnd", "ru_msgrcv", "ru_nsignals", "ru_nvcsw", "ru_nivcsw",
)  # fmt: skip


class _Timeval(ctypes.Structure):
    _fields_ = (("sec", ctypes.c_long), ("usec", ctypes.c_long))


class _Rusage(ctypes.Structure):
    _fields_ = (
        ("utime", _Timeval),
        ("stime", _Timeval),
        *((name, ctypes.c_long) for name in _RUSAGE_LONGS),
    )


# siginfo_t is 128 bytes on every Linux architecture. For SIGCHLD, si_code is
# at offset 8 and the union holds si_pid at 16 and si_status at 24 on 64-bit
# (12 and 20 on 32-bit, with si_uid between). All are native-order C ints.
_PTR64 = ctypes.sizeof(ctypes.c_void_p) == 8
_SIGINFO = struct.Struct("=8xi4xi4xi" if _PTR64 else "=8xii4xi")
_SIGINFO_SIZE = 128
_RUSAGE_SIZE = ctypes.sizeof(_Rusage)

_syscall = None
if sys.platform == "linux" and _SYS_WAITID is not None:
    try:
        # PyDLL: keep the GIL across the call. waitid is only ever called
        # with WNOHANG here (blocking waits poll() first), so it never blocks,
        # and releasing the GIL around a one-microsecond system call costs
        # more than the call, worse when spawn workers contend for the GIL.
        _libc = ctypes.PyDLL(None, use_errno=True)
        _syscall = _libc.syscall
        _syscall.restype = ctypes.c_long
        # No argtypes: converting each argument through them costs a couple of
        # microseconds on the exit-to-wake path. Every integer passed (the
        # call number, idtype, id, options) fits a C int, which the kernel
        # takes them as, and the two buffers are passed as pointers.
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        _syscall = None


class _Buffers(threading.local):
    """Per-thread siginfo and rusage buffers.

    The reap runs on the loop thread right between a child's exit and the
    wake-up of its waiters, so every microsecond here is latency; finalizers
    may reap from other threads at the same time, hence one set per thread.
    """

    def __init__(self) -> None:
        self.info = ctypes.create_string_buffer(_SIGINFO_SIZE)
        self.rusage = ctypes.create_string_buffer(_RUSAGE_SIZE)


_buffers = _Buffers()


def rusage_from_raw(raw: bytes) -> resource.struct_rusage:
    """Decode the kernel's struct rusage as :func:`waitid` returned it."""
    ru = _Rusage.from_buffer_copy(raw)
    values: list[float | int] = [
        ru.utime.sec + ru.utime.usec / 1e6,
        ru.stime.sec + ru.stime.usec / 1e6,
    ]
    values.extend(getattr(ru, name) for name in _RUSAGE_LONGS)
    return resource.struct_rusage(values)


def waitid_ctypes(idtype: int, ident: int, options: int) -> WaitResult | None:
    """:func:`waitid` through ctypes, for where the C module was not built.

    Never blocks on a non-blocking pidfd; see :func:`wait_pidfd_blocking`.

    Raises :class:`ChildProcessError` (ECHILD) when there is no such child of
    ours, i.e. somebody else reaped it. EINTR is retried.
    """
    # The ctypes call keeps the GIL (PyDLL): it must never block.
    if not options & os.WNOHANG:
        raise ValueError("waitid() without WNOHANG would block holding the GIL")
    if _syscall is None:
        try:
            res = os.waitid(idtype, ident, options)
        except BlockingIOError:
            return None
        if res is None:
            return None
        return WaitResult(res.si_pid, res.si_code, res.si_status, None)
    buf = _buffers
    # No memset needed: on success Linux writes every siginfo field it reports,
    # and si_pid = 0 when WNOHANG found nothing (kernel/exit.c, SYSCALL waitid).
    info = buf.info
    while _syscall(_SYS_WAITID, idtype, ident, info, options, buf.rusage):
        err = ctypes.get_errno()
        if err == errno.EAGAIN:
            # A pidfd in non-blocking mode (uvloop sets O_NONBLOCK on every
            # descriptor it watches) answers EAGAIN for "not exited yet".
            return None
        if err == errno.ECHILD:
            raise ChildProcessError(err, os.strerror(err))
        if err != errno.EINTR:
            raise OSError(err, os.strerror(err))
    code, pid, status = _SIGINFO.unpack_from(info)
    if pid == 0:
        return None
    # With WNOWAIT the kernel does not fill in rusage.
    rusage = None if options & os.WNOWAIT else buf.rusage.raw
    return WaitResult(pid, code, status, rusage)


_c_waitid: Callable[[int, int, int], tuple[int, int, int, bytes | None] | None] | None
try:
    from ._waitid import waitid as _c_waitid
except ImportError:
    _c_waitid = None
if os.environ.get("AIOPROC_NO_C_WAITID") == "1":
    _c_waitid = None

#: Whether :func:`waitid` uses the C module (else ctypes, or ``os.waitid``).
C_WAITID: bool = _c_waitid is not None

_as_result = functools.partial(tuple.__new__, WaitResult)


def waitid(idtype: int, ident: int, options: int) -> WaitResult | None:
    """``waitid(2)``: None when ``WNOHANG`` is given and nothing has exited.

    Never blocks: ``options`` must include ``WNOHANG`` (on a non-blocking pidfd,
    "not exited yet" is None too); see :func:`wait_pidfd_blocking`. With
    ``WNOWAIT`` the rusage is None, as the kernel fills none in.

    Raises :class:`ChildProcessError` (ECHILD) when there is no such child of
    ours, i.e. somebody else reaped it. EINTR is retried.
    """
    if _c_waitid is None:
        return waitid_ctypes(idtype, ident, options)
    res = _c_waitid(idtype, ident, options)
    return None if res is None else _as_result(res)


# Where live children's pidfds are kept: at or above this number, when the
# descriptor limit allows. A spawn's child copies our descriptors numbered up
# to the highest one it keeps (its pipes, which take the lowest free numbers),
# so pidfds left low would put every live child into every later spawn's copy;
# see PIDFD_FLOOR in _clone_exec.c, which moves the pidfds it makes the same way.
PIDFD_FLOOR = 1024


def out_of_the_way(fd: int) -> int:
    """``fd`` moved to the lowest free number >= :data:`PIDFD_FLOOR`, close-on-exec.

    Where that is not possible (a descriptor limit at or below the floor, or
    none free above it), ``fd`` itself, unchanged. Either way the caller owns
    the result and nothing else.
    """
    if fd >= PIDFD_FLOOR:
        return fd
    try:
        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, PIDFD_FLOOR)
    except OSError:
        return fd
    os.close(fd)
    return high


def pidfd_open(pid: int) -> int:
    """Open a pidfd (close-on-exec, as all pidfds are) for ``pid``, out of the way."""
    return out_of_the_way(os.pidfd_open(pid))


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    """Signal the process the pidfd refers to; ESRCH becomes ProcessLookupError."""
    signal.pidfd_send_signal(pidfd, sig)


def pidfd_supported() -> bool:
    """Whether this kernel (and seccomp policy) lets us open pidfds."""
    if not hasattr(os, "pidfd_open") or not hasattr(signal, "pidfd_send_signal"):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError as exc:
        # Out of descriptors, say, tells nothing about support: assume it, and
        # the pidfd_open after the next fork reports the real error clearly.
        return exc.errno not in (errno.ENOSYS, errno.EPERM, errno.EACCES, errno.EINVAL)
    os.close(fd)
    return True


def wait_pidfd_blocking(pidfd: int) -> WaitResult | None:
    """Reap through ``pidfd``, blocking until the process exits.

    The descriptor may be in non-blocking mode (uvloop leaves it so), where
    ``waitid`` would fail with EAGAIN instead of blocking, so wait for it to
    become readable with ``poll`` first.
    """
    import select

    while True:
        res = waitid(P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        if res is not None:
            return res
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.poll()

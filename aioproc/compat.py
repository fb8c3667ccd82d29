"""A drop-in for asyncio's subprocess functions, on aioproc's core.

Import ``create_subprocess_exec``, ``create_subprocess_shell``, ``PIPE``,
``STDOUT`` and ``DEVNULL`` from ``aioproc.compat`` instead of asyncio, and the
rest of the code keeps working: the :class:`Process` returned has the whole
interface of :class:`asyncio.subprocess.Process` (``pid``, ``returncode``,
``stdin``/``stdout``/``stderr``, ``wait()``, ``communicate()``,
``send_signal()``, ``terminate()``, ``kill()``), and is one: it subclasses
it, and its streams subclass :class:`asyncio.StreamWriter` and
:class:`asyncio.StreamReader`, so code that annotates or checks asyncio's
types takes it (see "Subclassing asyncio's classes" below). Underneath it is an
:class:`aioproc.Process`: no thread per child, no signal ever sent to a
recycled PID, a ``wait()`` that returns when the child has exited even if a
grandchild holds its pipes, and no "Event loop is closed" at exit.

Where asyncio's behaviour is a known bug, aioproc's wins; ``docs/migrating.md``
lists every difference, with the Python versions where asyncio behaves so.

Subclassing asyncio's classes
-----------------------------
asyncio's ``Process``, ``StreamWriter`` and ``StreamReader`` are built around a
transport and a protocol, which aioproc does not have. The subclasses here
never run the base ``__init__`` and override every public method and
property of their base (and ``__del__``), so no base code that expects a
transport ever runs; the base classes' private helpers are only called by
the base methods overridden here. ``tests/test_compat.py`` checks that
this holds for the running Python: a method a later Python adds to one of
those classes makes it fail, instead of being inherited broken. What has no
meaning without a transport says so: ``StreamWriter.transport`` raises
``AttributeError`` (``hasattr()`` is False), ``get_extra_info()`` returns
the default, ``start_tls()`` raises ``NotImplementedError``, and the
protocol-side methods of ``StreamReader`` (``feed_data()``, ``feed_eof()``,
``set_exception()``, ``set_transport()``) raise ``RuntimeError``: the pipe
is read directly, nothing feeds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal as _signal
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NoReturn, final

import anyio.abc

from ._process import Process as _CoreProcess
from ._process import spawn
from ._spawn import DEVNULL, PIPE, STDOUT, Redirect, StrOrBytesPath
from ._status import ExitStatus
from ._streams import DEFAULT_LIMIT, ProcessReader, ProcessWriter

if TYPE_CHECKING:
    import ssl

    from _typeshed import ReadableBuffer

__all__ = [
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "Process",
    "StreamReader",
    "StreamWriter",
    "create_subprocess_exec",
    "create_subprocess_shell",
]

# subprocess.Popen keywords that asyncio passes through to Popen and that
# aioproc's spawn() takes as they are.
_PASSED_THROUGH = frozenset(
    {
        "cwd",
        "env",
        "start_new_session",
        "process_group",
        "pass_fds",
        "close_fds",
        "user",
        "group",
        "umask",
    }
)

# Popen keywords aioproc has no equivalent for: accepted at their default
# value only (code often spells the default out), anything else is refused
# rather than silently ignored.
_ONLY_DEFAULT: dict[str, tuple[object, str]] = {
    "preexec_fn": (None, "aioproc runs no Python code in the child between fork and exec"),
    "executable": (None, "aioproc runs argv[0] (looked up in PATH)"),
    "restore_signals": (True, "aioproc always restores SIGPIPE, SIGXFZ and SIGXFSZ"),
    "extra_groups": (None, "pass user= (its supplementary groups are taken) or group="),
    "pipesize": (-1, "aioproc leaves the pipe size at the system default"),
    "startupinfo": (None, "it is a Windows option"),
    "creationflags": (0, "it is a Windows option"),
}


def _check_asyncio_options(kwds: dict[str, Any], *, shell: bool) -> None:
    """The checks asyncio's loop makes, with asyncio's exceptions and messages."""
    if kwds.pop("universal_newlines", False):
        raise ValueError("universal_newlines must be False")
    if "shell" in kwds and bool(kwds.pop("shell")) != shell:
        raise ValueError("shell must be True" if shell else "shell must be False")
    if kwds.pop("bufsize", 0) != 0:
        raise ValueError("bufsize must be 0")
    if kwds.pop("text", None):
        raise ValueError("text must be False")
    if kwds.pop("encoding", None) is not None:
        raise ValueError("encoding must be None")
    if kwds.pop("errors", None) is not None:
        raise ValueError("errors must be None")


def _spawn_options(kwds: dict[str, Any], *, shell: bool) -> dict[str, Any]:
    """The keywords for spawn(), from those asyncio would pass to subprocess.Popen."""
    _check_asyncio_options(kwds, shell=shell)
    caller = "create_subprocess_shell" if shell else "create_subprocess_exec"
    options: dict[str, Any] = {}
    for name, value in kwds.items():
        if name in _PASSED_THROUGH:
            options[name] = value
        elif name in _ONLY_DEFAULT:
            default, why = _ONLY_DEFAULT[name]
            if value != default:
                raise ValueError(f"{name} must be {default!r} with aioproc.compat: {why}")
        else:
            # What subprocess.Popen (under asyncio's default loop) raises.
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}")
    if "pass_fds" in options:  # Popen takes any iterable
        options["pass_fds"] = tuple(options["pass_fds"])
    return options


async def create_subprocess_exec(
    program: StrOrBytesPath,
    *args: StrOrBytesPath,
    stdin: Redirect = None,
    stdout: Redirect = None,
    stderr: Redirect = None,
    limit: int = DEFAULT_LIMIT,
    **kwds: Any,
) -> Process:
    """Start ``program`` with ``args``, as :func:`asyncio.create_subprocess_exec` does.

    ``stdin``, ``stdout`` and ``stderr`` take :data:`PIPE`, :data:`DEVNULL`,
    :data:`STDOUT` (stderr only), a file descriptor, a file object or None
    (inherit ours). ``limit`` bounds the line length of ``readline()`` on the
    pipes. Of the :class:`subprocess.Popen` keywords asyncio passes through,
    ``cwd``, ``env``, ``start_new_session``, ``process_group``, ``pass_fds``,
    ``close_fds``, ``user``, ``group`` and ``umask`` are supported;
    ``restore_signals``, ``preexec_fn``, ``executable``, ``extra_groups``,
    ``pipesize``, ``startupinfo`` and ``creationflags`` only at their default
    values (``ValueError`` otherwise). ``universal_newlines``, ``text``,
    ``encoding``, ``errors``, ``bufsize`` and ``shell`` are refused with the
    ``ValueError`` asyncio raises.
    """
    options = _spawn_options(kwds, shell=False)
    proc = await spawn(
        [program, *args], stdin=stdin, stdout=stdout, stderr=stderr, limit=limit, **options
    )
    return Process._create(proc)


async def create_subprocess_shell(
    cmd: str | bytes,
    stdin: Redirect = None,
    stdout: Redirect = None,
    stderr: Redirect = None,
    limit: int = DEFAULT_LIMIT,
    **kwds: Any,
) -> Process:
    """Run ``cmd`` through ``/bin/sh -c``, as :func:`asyncio.create_subprocess_shell` does.

    ``cmd`` must be a ``str`` or ``bytes`` (``ValueError`` otherwise, as
    asyncio's default loop raises). The other arguments are those of
    :func:`create_subprocess_exec`.
    """
    if not isinstance(cmd, (str, bytes)):
        raise ValueError("cmd must be a string")
    options = _spawn_options(kwds, shell=True)
    proc = await spawn(
        cmd, shell=True, stdin=stdin, stdout=stdout, stderr=stderr, limit=limit, **options
    )
    return Process._create(proc)


# ------------------------------------------------------------------ the process
# asyncio keeps a child it spawned running, and reaps it, even when the program
# drops its Process object ("fire and forget"); a dropped aioproc.Process kills
# its child. To behave as asyncio does, each compat Process is kept alive by a
# task waiting for it, until the exit is observed. When the loop shuts down
# (asyncio.run(), uvloop.run()), the task is cancelled and the child is killed
# and reaped by aioproc, silently, instead of being orphaned.
_waiting: set[asyncio.Task[ExitStatus]] = set()


def _keep_until_exit(proc: _CoreProcess) -> None:
    task = asyncio.get_running_loop().create_task(
        proc.wait(), name=f"aioproc.compat: pid {proc.pid}"
    )
    # A loop closed without cancelling its tasks (loop.close() after
    # run_until_complete) leaves this one pending; the child is then killed
    # and reaped by aioproc at exit, so "Task was destroyed but it is pending"
    # would be noise. (Private asyncio flag; a custom task class may lack it.)
    with contextlib.suppress(AttributeError):
        task._log_destroy_pending = False  # type: ignore[attr-defined]
    _waiting.add(task)
    task.add_done_callback(_forget)


def _forget(task: asyncio.Task[ExitStatus]) -> None:
    _waiting.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: nothing to report, the user's wait() reports it


@final
class Process(asyncio.subprocess.Process):
    """What :func:`create_subprocess_exec` returns: an :class:`asyncio.subprocess.Process`.

    ``stdin`` is a :class:`StreamWriter` and ``stdout``/``stderr`` are
    :class:`StreamReader` objects (subclasses of asyncio's). ``process`` is
    the underlying :class:`aioproc.Process`, for what asyncio does not offer
    (``stop()``, ``status``, ``async with``).
    """

    # Plain attributes, as asyncio's (typeshed declares them so).
    pid: int
    stdin: StreamWriter | None
    stdout: StreamReader | None
    stderr: StreamReader | None
    _proc: _CoreProcess

    def __init__(self, *_: object, **__: object) -> None:
        raise TypeError("use aioproc.compat.create_subprocess_exec() or create_subprocess_shell()")

    @classmethod
    def _create(cls, proc: _CoreProcess) -> Process:
        self = object.__new__(cls)
        self._proc = proc
        self.pid = proc.pid
        self.stdin = None if proc.stdin is None else StreamWriter._create(proc.stdin)
        self.stdout = None if proc.stdout is None else StreamReader._create(proc.stdout)
        self.stderr = None if proc.stderr is None else StreamReader._create(proc.stderr)
        _keep_until_exit(proc)
        return self

    def __repr__(self) -> str:
        return f"<Process {self.pid}>"

    @property
    def returncode(self) -> int | None:
        """None while the child runs; then its exit code, or minus the signal that killed it."""
        return self._proc.returncode

    @property
    def process(self) -> _CoreProcess:
        """The :class:`aioproc.Process` underneath."""
        return self._proc

    @property
    def status(self) -> ExitStatus | None:
        """The child's :class:`aioproc.ExitStatus` once it has been reaped, else None."""
        return self._proc.status

    async def wait(self) -> int:
        """Wait for the child to exit and return its returncode.

        Returns as soon as the child has exited, even while a grandchild keeps
        its stdout or stderr open (asyncio's default loop waits for the pipes
        too on Python 3.11.7+ and 3.12.1+, and hangs). Cancelling it is safe.
        """
        return int(await self._proc.wait())

    # typeshed declares tuple[bytes, bytes]; asyncio returns None for a
    # stream that is not a pipe, as this says.
    async def communicate(  # type: ignore[override]
        self, input: bytes | bytearray | memoryview | None = None
    ) -> tuple[bytes | None, bytes | None]:
        """Write ``input`` to stdin and close it, read stdout and stderr to EOF, wait for exit.

        Returns ``(stdout_data, stderr_data)``; an entry is None when that
        stream is not a pipe. As with asyncio, ``input`` is ignored when stdin
        is not a pipe, and a child that exits or stops reading does not make it
        fail (the rest of ``input`` is dropped).
        """
        if self.stdin is None or self.stdin.is_closing():
            input = None  # asyncio drops it: nowhere to write it
        if input is not None and not isinstance(input, bytes):
            input = bytes(input)
        return await self._proc.communicate(input)

    def send_signal(self, signal: int) -> None:
        """Send ``signal`` to the child.

        Raises :class:`ProcessLookupError` once ``returncode`` is set, as asyncio
        does once it has finished with the child. While the child has exited but
        that has not been seen yet (``returncode`` still None) it does nothing,
        as asyncio. It never reaches another process that got the child's PID.
        """
        finished = self._proc.returncode is not None
        try:
            self._proc.send_signal(signal)
        except ProcessLookupError:
            if finished:
                raise
            # Exited, not yet reaped: asyncio (like subprocess.Popen) lets a
            # signal to a process it has not seen exit pass silently.

    def terminate(self) -> None:
        """Send SIGTERM to the child (see :meth:`send_signal`)."""
        self.send_signal(_signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL to the child (see :meth:`send_signal`)."""
        self.send_signal(_signal.SIGKILL)


@final
class StreamWriter(asyncio.StreamWriter):
    """The child's stdin: an :class:`asyncio.StreamWriter` with no transport underneath.

    As with asyncio, ``write()`` does not raise when the child has closed its
    stdin: the data is dropped and the next ``drain()`` raises
    :class:`BrokenPipeError` (a :class:`ConnectionError`, as asyncio's
    ``ConnectionResetError`` is). Writing after ``close()`` drops the data too.
    """

    __slots__ = ("_writer",)

    _writer: ProcessWriter

    def __init__(self, *_: object, **__: object) -> None:
        raise TypeError("StreamWriter objects are made by aioproc.compat, not directly")

    @classmethod
    def _create(cls, writer: ProcessWriter) -> StreamWriter:
        self = object.__new__(cls)
        self._writer = writer
        return self

    def __repr__(self) -> str:
        return f"<aioproc.compat.StreamWriter {self._writer!r}>"

    def __del__(self, *_: object) -> None:
        # asyncio's (3.11+) closes the transport and warns; the pipe is the
        # ProcessWriter's, closed with the process.
        pass

    @property
    def transport(self) -> NoReturn:
        """There is none: ``AttributeError`` (the pipe is written directly)."""
        raise AttributeError("aioproc.compat's StreamWriter has no transport: see .writer")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``default``: there is no transport to describe."""
        return default

    async def start_tls(
        self,
        sslcontext: ssl.SSLContext,
        *,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> None:
        """Not supported: ``NotImplementedError`` (TLS over a child's stdin has no use)."""
        raise NotImplementedError("start_tls() on a child's stdin")

    @property
    def writer(self) -> ProcessWriter:
        """The :class:`aioproc.ProcessWriter` underneath (also an anyio byte stream)."""
        return self._writer

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` for the child; never blocks. Follow with ``await drain()``."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if self._writer.is_closing():
            return  # closed by us, or broken: asyncio drops the data too
        try:
            self._writer.write(data)
        except OSError:
            pass  # the pipe broke; the writer keeps the error and drain() raises it

    def writelines(self, data: Iterable[bytes | bytearray | memoryview]) -> None:
        """Queue each of ``data``."""
        for chunk in data:
            self.write(chunk)

    async def drain(self) -> None:
        """Wait until the buffered data has gone down to the high-water mark.

        Raises :class:`BrokenPipeError` if the child closed its stdin.
        """
        await self._writer.drain()

    def can_write_eof(self) -> bool:
        """True: closing the pipe is the end of file."""
        return True

    def write_eof(self) -> None:
        """Close the pipe once the buffered data is written."""
        self._writer.close()

    def close(self) -> None:
        """Close the pipe once the buffered data is written."""
        self._writer.close()

    def is_closing(self) -> bool:
        """Whether ``close()`` was called or the pipe broke."""
        return self._writer.is_closing()

    async def wait_closed(self) -> None:
        """Wait until the pipe is closed."""
        await self._writer.wait_closed()


_NOT_FED = (
    "aioproc.compat's StreamReader reads the child's pipe itself; "
    "no protocol feeds it, so {} has nothing to do"
)


@final
class StreamReader(asyncio.StreamReader, anyio.abc.ByteReceiveStream):
    """The child's stdout or stderr: an :class:`asyncio.StreamReader` that reads the pipe itself.

    ``read``, ``readline``, ``readexactly``, ``readuntil``, ``at_eof`` and
    ``async for`` behave as asyncio's; they are those of the
    :class:`aioproc.ProcessReader` underneath (``reader``), which is also why
    this is an anyio ``ByteReceiveStream`` (``receive()``, ``aclose()``).
    ``exception()`` is always None. The protocol-side methods
    (``feed_data()``, ``feed_eof()``, ``set_exception()``, ``set_transport()``)
    raise :class:`RuntimeError`.
    """

    __slots__ = ("_reader",)

    _reader: ProcessReader

    def __init__(self, *_: object, **__: object) -> None:
        raise TypeError("StreamReader objects are made by aioproc.compat, not directly")

    @classmethod
    def _create(cls, reader: ProcessReader) -> StreamReader:
        self = object.__new__(cls)
        self._reader = reader
        return self

    def __repr__(self) -> str:
        return f"<aioproc.compat.StreamReader {self._reader!r}>"

    @property
    def reader(self) -> ProcessReader:
        """The :class:`aioproc.ProcessReader` underneath."""
        return self._reader

    # ---------------------------------------------------------- asyncio's API
    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all until EOF if ``n`` is negative); b"" at EOF."""
        return await self._reader.read(n)

    async def readline(self) -> bytes:
        """One line with its ``\\n``; the unterminated rest at EOF; b"" after that."""
        return await self._reader.readline()

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or :class:`asyncio.IncompleteReadError` at EOF."""
        return await self._reader.readexactly(n)

    async def readuntil(
        self, separator: ReadableBuffer | tuple[ReadableBuffer, ...] = b"\n"
    ) -> bytes:
        """Up to and including ``separator`` (one separator: a tuple is a ``TypeError``)."""
        if isinstance(separator, tuple):
            raise TypeError("aioproc reads up to one separator, not a tuple of them")
        return await self._reader.readuntil(bytes(separator))

    def at_eof(self) -> bool:
        """True once EOF was seen and the buffer is empty."""
        return self._reader.at_eof()

    def __aiter__(self) -> StreamReader:
        return self

    async def __anext__(self) -> bytes:
        line = await self._reader.readline()
        if not line:
            raise StopAsyncIteration
        return line

    def exception(self) -> Exception | None:
        """None: errors are raised by the reading methods themselves."""
        return None

    def set_exception(self, exc: Exception) -> None:
        raise RuntimeError(_NOT_FED.format("set_exception()"))

    def set_transport(self, transport: asyncio.BaseTransport) -> None:
        raise RuntimeError(_NOT_FED.format("set_transport()"))

    def feed_data(self, data: Any) -> None:
        raise RuntimeError(_NOT_FED.format("feed_data()"))

    def feed_eof(self) -> None:
        raise RuntimeError(_NOT_FED.format("feed_eof()"))

    # ------------------------------------------------------------ anyio's API
    async def receive(self, max_bytes: int = 65536) -> bytes:
        """anyio's ``receive()``: see :meth:`aioproc.ProcessReader.receive`."""
        return await self._reader.receive(max_bytes)

    async def aclose(self) -> None:
        """Close our end of the pipe."""
        await self._reader.aclose()

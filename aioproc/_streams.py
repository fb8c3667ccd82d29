"""Pipe streams to and from a child.

Both ends talk to a non-blocking pipe descriptor directly through the loop's
``add_reader``/``add_writer``, with no asyncio transport in between, so:

* nothing reads ahead: a child that writes faster than we read blocks on a
  full pipe, and memory stays bounded (``limit`` bounds a line's length);
* closing needs no loop: after the loop is closed the descriptors are simply
  closed, with no "Event loop is closed" and no unclosed-transport warning.

They offer asyncio's ``StreamReader``/``StreamWriter`` methods and implement
anyio's ``ByteReceiveStream``/``ByteSendStream``, so anyio's text and buffered
wrappers work on them.
"""

from __future__ import annotations

import asyncio
import copy
import errno
import os
from collections.abc import Callable, Iterable

import anyio
import anyio.abc

__all__ = ["DEFAULT_LIMIT", "ProcessReader", "ProcessWriter"]

DEFAULT_LIMIT = 2**16  # like asyncio's streams: the longest line readline() accepts
_CHUNK = 2**16
# The most one read asks for: os.read() allocates what it is asked for up
# front, so a read of ``limit`` bytes with limit=2**40 failed with MemoryError
# (and with 2**64, OverflowError) after the child had started.
_MAX_READ = 2**20


def _close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:  # pragma: no cover - already closed by a forked child? never ours
        pass


class ProcessReader(anyio.abc.ByteReceiveStream):
    """Reads the child's stdout or stderr."""

    def __init__(
        self, fd: int, loop: asyncio.AbstractEventLoop, limit: int = DEFAULT_LIMIT
    ) -> None:
        if limit <= 0:
            raise ValueError("limit must be positive")
        self._fd = fd
        self._loop = loop
        self._limit = limit
        self._read_size = max(_CHUNK, min(limit, _MAX_READ))
        self._buf = bytearray()
        self._eof = False
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._reading = False
        self._lent = False  # being handed to a child (see _hand_over)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "eof" if self._eof else f"fd={self._fd}"
        return f"<ProcessReader {state} buffered={len(self._buf)}>"

    def fileno(self) -> int:
        return self._fd

    # -------------------------------------------------------------- the pipe
    def _read_now(self) -> bool | None:
        """One non-blocking read into the buffer. True: got data; False: EOF; None: would block."""
        try:
            data = os.read(self._fd, self._read_size)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno == errno.EIO:  # a pty whose other side closed
                data = b""
            else:
                raise
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    async def _fill(self) -> bool:
        """Read at least one more chunk; False at EOF."""
        if self._closed:
            raise anyio.ClosedResourceError("the stream is closed")
        if self._eof:
            return False
        if self._reading:
            raise anyio.BusyResourceError("reading")
        if self._lent:
            raise anyio.BusyResourceError("reading a pipe being handed to a child")
        self._reading = True
        try:
            while True:
                got = self._read_now()
                if got is not None:
                    return got
                await self._wait_readable()
                # close() may have run after the loop woke us but before we
                # resumed (the waiter was already done, so it could not fail
                # it). The descriptor is closed now, and its number may already
                # name another file: it must not be read.
                if self._closed:
                    raise anyio.ClosedResourceError("the stream was closed")
        finally:
            self._reading = False

    async def _wait_readable(self) -> None:
        fut = self._waiter = self._loop.create_future()
        self._loop.add_reader(self._fd, _wake, fut)
        try:
            await fut
        finally:
            self._waiter = None
            if not self._closed:
                self._loop.remove_reader(self._fd)

    def read_available(self) -> bytes:
        """Whatever can be read right now without waiting (buffer included)."""
        while not self._closed and not self._eof and not self._lent and self._read_now():
            pass
        data = bytes(self._buf)
        self._buf.clear()
        return data

    # ------------------------------------------------------------ asyncio API
    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all until EOF if ``n`` is negative); b"" at EOF."""
        if n == 0:
            return b""
        if n < 0:
            while await self._fill():
                pass
            data = bytes(self._buf)
            self._buf.clear()
            return data
        if not self._buf:
            await self._fill()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or :class:`asyncio.IncompleteReadError` at EOF."""
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        while len(self._buf) < n:
            if not await self._fill():
                partial = bytes(self._buf)
                self._buf.clear()
                raise asyncio.IncompleteReadError(partial, n)
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Read up to and including ``separator``.

        Raises :class:`asyncio.IncompleteReadError` at EOF and
        :class:`asyncio.LimitOverrunError` when no separator comes within ``limit``.
        """
        if not separator:
            raise ValueError("separator should be at least one-byte string")
        start = 0
        while True:
            idx = self._buf.find(separator, start)
            if idx >= 0:
                # As asyncio: ``limit`` bounds what comes before the separator.
                if idx > self._limit:
                    raise asyncio.LimitOverrunError(
                        "the separator was found, but the chunk is longer than the limit", idx
                    )
                end = idx + len(separator)
                data = bytes(self._buf[:end])
                del self._buf[:end]
                return data
            # The separator could still start at ``start`` once more data comes.
            start = max(0, len(self._buf) - len(separator) + 1)
            if start > self._limit:
                raise asyncio.LimitOverrunError(
                    "the separator was not found within the limit", start
                )
            if not await self._fill():
                partial = bytes(self._buf)
                self._buf.clear()
                raise asyncio.IncompleteReadError(partial, None)

    async def readline(self) -> bytes:
        """One line with its ``\\n``; the unterminated rest at EOF; b"" after that.

        A line longer than ``limit`` raises :class:`ValueError`, as asyncio does,
        and is dropped (the buffered part of it) so that reading can go on.
        """
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial
        except asyncio.LimitOverrunError as exc:
            # As asyncio: drop the line if its end is buffered, else all that is
            # buffered of it. Keeping it would make every later readline() (and
            # ``async for``) fail on the same bytes forever.
            if self._buf.startswith(b"\n", exc.consumed):
                del self._buf[: exc.consumed + 1]
            else:
                self._buf.clear()
            raise ValueError(str(exc)) from None

    def at_eof(self) -> bool:
        """True once EOF was seen and the buffer is empty."""
        return self._eof and not self._buf

    def __aiter__(self) -> ProcessReader:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    # -------------------------------------------------------------- anyio API
    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Between 1 and ``max_bytes`` bytes, as anyio's ``ByteReceiveStream`` says.

        Raises :class:`ValueError` if ``max_bytes`` is less than 1,
        :class:`anyio.EndOfStream` once the child's end is closed and all is
        read, :class:`anyio.ClosedResourceError` after :meth:`close` (or
        ``aclose()``), and :class:`anyio.BusyResourceError` while another task
        reads.
        """
        if max_bytes < 1:
            # read() gives b"" for 0 and everything for a negative size: here
            # b"" would mean EOF, and "everything" would break the bound.
            raise ValueError(f"max_bytes must be a positive integer, not {max_bytes!r}")
        data = await self.read(max_bytes)
        if not data:
            raise anyio.EndOfStream
        return data

    def close(self) -> None:
        """Close our end. A task blocked reading gets :class:`anyio.ClosedResourceError`."""
        if self._closed:
            return
        self._closed = True
        # Reading after close() raises, buffered or not (as anyio's contract says).
        self._buf.clear()
        waiter = self._waiter
        if waiter is not None:
            if not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
            if not waiter.done():
                waiter.set_exception(anyio.ClosedResourceError("the stream was closed"))
        _close_fd(self._fd)

    async def aclose(self) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------ handing the pipe to a child
    def _hand_over(self, what: str) -> None:
        """Ready our end to become a new child's ``what`` (``spawn(stdin=p1.stdout)``).

        It is made blocking (the child's copy shares the flag, and a program
        reading a non-blocking stdin fails with EAGAIN), and reading here
        raises :class:`anyio.BusyResourceError` until :meth:`_handed`, since a
        read of a blocking pipe would block the loop. Raises ``ValueError``,
        changing nothing, if data read into our buffer would be lost.
        """
        problem = None
        if self._closed:
            problem = "it is closed"
        elif self._reading:
            problem = "a task is reading it"
        elif self._buf:
            problem = f"{len(self._buf)} bytes already read from it would be lost"
        _lend(self, what, problem)

    def _handed(self, taken: bool) -> None:
        """The spawn is over: the child took the pipe (close ours), or it failed (as before)."""
        _handed(self, taken, self._closed)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class ProcessWriter(anyio.abc.ByteSendStream):
    """Writes to the child's stdin.

    ``write()`` never blocks: what the pipe does not take at once is buffered
    and written as the child reads. ``await drain()`` waits until the buffer is
    down to ``high_water`` bytes; a child that went away raises
    :class:`BrokenPipeError` there.
    """

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop, high_water: int = 2**16) -> None:
        self._fd = fd
        self._loop = loop
        self._high_water = high_water
        self._buf = bytearray()
        self._closing = False
        self._closed = False
        self._closed_by_us = False  # close(), write_eof(), abort() or aclose() was called
        self._lent = False  # being handed to a child (see _hand_over)
        self._error: OSError | None = None  # why the pipe broke; see _failure()
        self._writing = False  # registered with add_writer
        self._drainers: list[tuple[int, asyncio.Future[None]]] = []
        self._closed_fut: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "closing" if self._closing else f"fd={self._fd}"
        return f"<ProcessWriter {state} buffered={len(self._buf)}>"

    def fileno(self) -> int:
        return self._fd

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` for the child. Raises if the stream is closing or broken."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
        if self._error is not None:
            raise self._failure()
        if self._closing:
            raise anyio.ClosedResourceError("write() after close()")
        if self._lent:
            raise anyio.BusyResourceError("writing to a pipe being handed to a child")
        if not data:
            return
        if isinstance(data, memoryview) and (data.itemsize != 1 or data.ndim != 1):
            # os.write() counts bytes; slicing below must too, not items.
            data = data.cast("B")
        if not self._buf:
            try:
                n = os.write(self._fd, data)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                self._fail(exc)
                raise self._failure() from None
            data = memoryview(data)[n:]
            if not data:
                return
        self._buf += data
        if not self._writing:
            self._writing = True
            self._loop.add_writer(self._fd, self._on_writable)

    def writelines(self, lines: Iterable[bytes | bytearray | memoryview]) -> None:
        for line in lines:
            self.write(line)

    def _on_writable(self) -> None:
        try:
            n = os.write(self._fd, self._buf)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(exc)
            return
        del self._buf[:n]
        self._wake_drainers()
        if not self._buf:
            self._stop_writing()
            if self._closing:
                self._finish_close()

    def _stop_writing(self) -> None:
        if self._writing:
            self._writing = False
            if not self._loop.is_closed():
                self._loop.remove_writer(self._fd)

    def _wake_drainers(self) -> None:
        size = len(self._buf)
        keep = []
        for limit, fut in self._drainers:
            if fut.done():
                continue
            if self._error is not None:
                fut.set_exception(self._failure())
            elif size <= limit:
                fut.set_result(None)
            else:
                keep.append((limit, fut))
        self._drainers = keep

    def _failure(self) -> OSError:
        """A fresh copy of the error that broke the pipe, to raise.

        Raising one stored instance again and again would grow its
        ``__traceback__`` by the raising frames each time (keeping them, and
        their locals, alive) and share one traceback between unrelated callers.
        """
        assert self._error is not None
        return copy.copy(self._error)

    def _fail(self, exc: OSError) -> None:
        if exc.errno in (errno.EPIPE, errno.ECONNRESET):
            exc = BrokenPipeError(exc.errno, "the child closed its stdin")
        self._error = exc
        self._buf.clear()
        self._stop_writing()
        self._wake_drainers()
        self._finish_close()

    def _finish_close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._closing = True
        self._stop_writing()
        _close_fd(self._fd)
        fut = self._closed_fut
        if fut is not None and not fut.done():
            fut.set_result(None)
        if self._drainers:
            self._wake_drainers()

    async def _wait_buffer(self, limit: int) -> None:
        if self._error is not None:
            raise self._failure()
        if len(self._buf) <= limit:
            return
        fut = self._loop.create_future()
        self._drainers.append((limit, fut))
        await fut

    async def drain(self) -> None:
        """Wait until the buffer is down to the high-water mark."""
        await self._wait_buffer(self._high_water)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.close()

    def close(self) -> None:
        """Close once the buffered data is written (at once if there is none)."""
        self._closed_by_us = True
        if self._closing:
            return
        self._closing = True
        if not self._buf:
            self._finish_close()

    def abort(self) -> None:
        """Close now, dropping buffered data.

        A task waiting in :meth:`drain` or :meth:`send` gets
        :class:`anyio.ClosedResourceError`: its data was not all written.
        """
        self._buf.clear()
        self._closing = True
        self._closed_by_us = True
        drainers, self._drainers = self._drainers, []
        for _, fut in drainers:
            # Still waiting, so the buffer was above their mark: data was dropped.
            if not fut.done():
                fut.set_exception(anyio.ClosedResourceError("the stream was aborted"))
        self._finish_close()

    def is_closing(self) -> bool:
        return self._closing

    async def wait_closed(self) -> None:
        """Wait until the buffered data is written and the pipe closed."""
        if self._closed:
            return
        if self._closed_fut is None:
            self._closed_fut = self._loop.create_future()
        await asyncio.shield(self._closed_fut)

    # -------------------------------------------------------------- anyio API
    async def send(self, item: bytes) -> None:
        """Write ``item`` and wait until the pipe has taken all of it (anyio's ``send``).

        Raises :class:`anyio.ClosedResourceError` once the stream was closed
        here (``close()``, ``aclose()``, ``abort()``, ``write_eof()``), also
        when an ``abort()`` drops ``item``; and :class:`anyio.BrokenResourceError`
        (from the :class:`BrokenPipeError`) when the child has closed its stdin
        or exited. The asyncio-style ``write()``/``drain()`` raise the
        :class:`BrokenPipeError` itself, as asyncio's streams do.
        """
        if self._closed_by_us:
            raise anyio.ClosedResourceError("the stream is closed")
        try:
            self.write(item)
            await self._wait_buffer(0)
        except OSError as exc:
            if self._closed_by_us:  # closed while we waited, then the pipe broke
                raise anyio.ClosedResourceError("the stream was closed") from exc
            raise anyio.BrokenResourceError(f"the child's stdin is gone: {exc}") from exc

    def _hand_over(self, what: str) -> None:
        """Ready our end to become a new child's ``what`` (``spawn(stdout=p1.stdin)``).

        As :meth:`ProcessReader._hand_over`: made blocking, and writing here
        raises :class:`anyio.BusyResourceError` until :meth:`_handed`.
        Raises ``ValueError``, changing nothing, if buffered data would be lost.
        """
        problem = None
        if self._closing:
            problem = "it is closed"
        elif self._buf:
            problem = f"{len(self._buf)} bytes written to it are not in the pipe yet"
        _lend(self, what, problem)

    def _handed(self, taken: bool) -> None:
        """The spawn is over: the child took the pipe (close ours), or it failed (as before)."""
        _handed(self, taken, self._closing)

    async def aclose(self) -> None:
        """Close once the buffered data is written, and wait for it (idempotent).

        If cancelled while waiting (a child that does not read), the pipe is
        closed at once and the rest of the data dropped, as :meth:`abort`:
        the stream is closed whichever way this returns.
        """
        self.close()
        try:
            await self.wait_closed()
        except BaseException:
            self.abort()
            raise

    @property
    def closed(self) -> bool:
        return self._closed


ReaderFactory = Callable[[int, asyncio.AbstractEventLoop], ProcessReader]


# ------------------------------------------------------- handing a pipe to a child
def _lend(stream: ProcessReader | ProcessWriter, what: str, problem: str | None) -> None:
    """Make ``stream``'s end blocking and lent, or raise ``ValueError`` for ``problem``."""
    if problem is None and stream._lent:
        problem = "it is being handed to another child"
    if problem is not None:
        raise ValueError(f"{what}: {stream!r} cannot be handed to the child: {problem}")
    os.set_blocking(stream._fd, True)
    stream._lent = True


def _handed(stream: ProcessReader | ProcessWriter, taken: bool, closed: bool) -> None:
    """The spawn is over: the child took the pipe (close ours), or it failed (as before)."""
    stream._lent = False
    if taken:
        stream.close()
    elif not closed:
        os.set_blocking(stream._fd, False)

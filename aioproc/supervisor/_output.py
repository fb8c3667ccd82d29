"""Where a service's output goes: ``Service(output=...)``, and how it gets there.

* ``"inherit"``: the service writes to the supervisor's stdout/stderr directly.
* ``"prefix"``: its lines go to the supervisor's console (``_console.py``): the
  supervisor's stdout by default, as ``name | line`` or as JSON lines.
* a path (``str`` or :class:`os.PathLike`): its output is appended to that file,
  bytes as written.
* a :class:`~._logfile.LogFile`: the same, rotated by size (see ``_logfile.py``).
  Files are opened through the supervisor's :class:`~._logfile.LogFiles`: one
  writer per file, shared by every service that writes to it.
* a callable: called as ``callback(name, line)`` with each decoded line (no newline).

In every mode but ``"inherit"`` the service's stdout and stderr share one pipe (as
in foreman and honcho), so their lines stay in the order they were written; the
console's ``mark_stderr`` and JSON mode give stderr a pipe of its own instead, to
tell the two apart.

**Lines.** Output is passed on in whole lines as soon as their newline arrives: the
lines of two services never mix, in a shared file or on the console. A last line
with no newline is passed on (with one) when the run ends. A line longer than
:data:`LINE_LIMIT` bytes (64 KiB) is cut into pieces of at most that size (at a
UTF-8 character boundary), each piece but the last ending with :data:`CUT_MARK`:
a service printing 100 MB without a newline costs the supervisor 64 KiB of memory,
not 100 MB, and holds no one up.

**Chunks.** The pipes are read a chunk at a time (up to 256 KiB) by a loop reader,
with no task switch per chunk, and a chunk's complete lines go on as one block:
no Python code runs per line on the way to a file or (for plain text) to the
console. Lines are split in Python only where someone needs them one by one: a
callable ``output``, a readiness check reading lines (until it has passed), the
followers of :meth:`~aioproc.supervisor.Supervisor.follow_logs`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Union

from ._console import Console
from ._logfile import LogFile, LogFiles, LogFileWriter, log_file_of

__all__ = [
    "CUT_MARK",
    "LINE_LIMIT",
    "OutputSpec",
    "Pipes",
    "Sink",
    "Splitter",
    "make_sink",
    "split_lines",
]

#: The longest line passed on whole (bytes, newline excluded); longer ones are cut.
LINE_LIMIT = 65536
#: Ends each piece of a line that was cut at :data:`LINE_LIMIT`.
CUT_MARK = b" [...]"
#: How much one read takes from a pipe.
READ_SIZE = 262144
#: At most this many reads take what is left in a pipe once the run is over.
_FINAL_READS = 16

OutputSpec = Union[str, "os.PathLike[str]", LogFile, Callable[[str, str], object]]


def split_lines(block: bytes) -> list[str]:
    """The lines of ``block`` (whole lines), decoded, without newline or trailing CR."""
    return [raw.removesuffix(b"\r").decode("utf-8", "replace") for raw in block[:-1].split(b"\n")]


class Sink:
    """Receives the output of one run of a service, in blocks of whole lines."""

    #: The service's pid, once it is spawned.
    pid = 0

    def block(self, data: bytes, err: bool, when: float) -> None:
        """``data``: one or more lines, each ending in ``\\n``; ``err``: from stderr."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class _ConsoleSink(Sink):
    def __init__(self, console: Console, name: str) -> None:
        self._console = console
        self._name = name

    def block(self, data: bytes, err: bool, when: float) -> None:
        self._console.lines(self._name, data, err, self.pid, when)


class _FileSink(Sink):
    def __init__(self, logs: LogFiles, spec: LogFile) -> None:
        # One writer per file, shared (O_APPEND: each block lands at the end in
        # one write, even if other programs append to the file too).
        self._logs = logs
        self._writer: LogFileWriter | None = logs.open(spec)

    def block(self, data: bytes, err: bool, when: float) -> None:
        if self._writer is not None:
            self._writer.write(data)

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            self._logs.release(writer)


class _CallableSink(Sink):
    def __init__(self, callback: Callable[[str, str], object], name: str) -> None:
        self._callback = callback
        self._name = name

    def block(self, data: bytes, err: bool, when: float) -> None:
        for line in split_lines(data):
            self._callback(self._name, line)


def make_sink(output: OutputSpec, name: str, console: Console, logs: LogFiles) -> Sink | None:
    """The sink for one run of a service; None for ``"inherit"``.

    Raises :class:`OSError` if its log file cannot be opened.
    """
    if output == "inherit":
        return None
    if output == "prefix":
        return _ConsoleSink(console, name)
    spec = log_file_of(output)
    if spec is not None:
        return _FileSink(logs, spec)
    assert callable(output)
    return _CallableSink(output, name)


def _cut_point(data: bytes, limit: int) -> int:
    """Where to cut ``data`` (longer than ``limit``): at ``limit``, or up to three bytes
    before it so that the next piece starts with a whole UTF-8 character."""
    cut = limit
    while cut > limit - 3 and 0x80 <= data[cut] < 0xC0:  # a continuation byte
        cut -= 1
    return limit if 0x80 <= data[cut] < 0xC0 else cut  # not UTF-8 anyway


class Splitter:
    """Cuts one pipe's byte stream into blocks of whole lines (see the module docstring)."""

    def __init__(self, emit: Callable[[bytes], None], limit: int = LINE_LIMIT) -> None:
        self._emit = emit
        self._limit = limit
        self._tail = b""  # the start of a line whose newline has not come yet

    def feed(self, data: bytes) -> None:
        if self._tail:
            data = self._tail + data
        end = data.rfind(b"\n") + 1
        if end:
            self._tail = data[end:]
            # A full slice of bytes is the same object: no copy for the usual chunk.
            block = data[:end]
            if len(block) > self._limit and self._too_long(block):
                block = self._cut_lines(block)
            self._emit(block)
        else:
            self._tail = data
        if len(self._tail) > self._limit:
            self._emit(self._cut_tail())

    def flush(self) -> None:
        """The run is over: pass on an unterminated last line, with a newline."""
        if self._tail:
            tail, self._tail = self._tail, b""
            self._emit(tail + b"\n")

    def _too_long(self, block: bytes) -> bool:
        """Whether ``block`` may hold a line longer than the limit.

        A line of more than ``limit`` bytes covers at least one whole window of
        ``limit // 2`` bytes aligned on a multiple of it: looking for a newline in
        each such window costs a few ``find`` calls per chunk, not one per line.
        True can be a false alarm (a line of half to all of the limit): the cut
        that follows then leaves the block as it was.
        """
        step = self._limit // 2
        for start in range(0, len(block) - step + 1, step):
            if block.find(b"\n", start, start + step) < 0:
                return True
        return False

    def _cut_lines(self, block: bytes) -> bytes:
        out = []
        for line in block[:-1].split(b"\n"):
            while len(line) > self._limit:
                cut = _cut_point(line, self._limit)
                out.append(line[:cut] + CUT_MARK)
                line = line[cut:]
            out.append(line)
        out.append(b"")
        return b"\n".join(out)

    def _cut_tail(self) -> bytes:
        out = []
        tail = self._tail
        while len(tail) > self._limit:
            cut = _cut_point(tail, self._limit)
            out.append(tail[:cut] + CUT_MARK + b"\n")
            tail = tail[cut:]
        self._tail = tail
        return b"".join(out)


class Pipes:
    """The output pipes of one run: read by loop readers, passed on in blocks.

    The supervisor makes the pipes itself rather than through ``spawn(stdout=PIPE)``
    so that it can keep a loop reader on each for the whole run: a chunk costs one
    ``read`` and one callback, with no future, task switch or ``epoll_ctl`` in
    between. ``on_block(block, err)`` is called on the loop thread.
    """

    def __init__(self, separate_stderr: bool, on_block: Callable[[bytes, bool], None]) -> None:
        self._on_block = on_block
        self._readers: dict[int, Splitter] = {}  # read end -> its splitter
        self.child_ends: list[int] = []  # the write ends, for spawn (then closed)
        self._loop: asyncio.AbstractEventLoop | None = None
        try:
            for err in (False, True) if separate_stderr else (False,):
                read, write = os.pipe2(os.O_CLOEXEC)
                os.set_blocking(read, False)
                self.child_ends.append(write)
                self._readers[read] = Splitter(self._emitter(err))
        except BaseException:
            self.close()
            raise

    def _emitter(self, err: bool) -> Callable[[bytes], None]:
        return lambda block: self._on_block(block, err)

    @property
    def stdout(self) -> int:
        return self.child_ends[0]

    @property
    def stderr(self) -> int | None:
        return self.child_ends[1] if len(self.child_ends) > 1 else None

    def spawned(self) -> None:
        """The child holds its ends now: close ours, and start reading."""
        for fd in self.child_ends:
            os.close(fd)
        self.child_ends.clear()
        self._loop = loop = asyncio.get_running_loop()
        for fd in self._readers:
            loop.add_reader(fd, self._readable, fd)

    def _readable(self, fd: int) -> None:
        splitter = self._readers[fd]
        try:
            data = os.read(fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self._done(fd)
            return
        splitter.feed(data)

    def _done(self, fd: int) -> None:
        """EOF on ``fd``: stop reading it; the last line goes on."""
        splitter = self._readers.pop(fd)
        assert self._loop is not None
        self._loop.remove_reader(fd)
        os.close(fd)
        splitter.flush()

    def finish(self) -> None:
        """The service is gone: pass on what is in the pipes, and close them.

        Whatever the group wrote is in the pipe already. A process that left the
        group may still hold the pipe open: do not wait for EOF, take what is there
        (a bounded amount: such a process may be writing still).
        """
        for fd in list(self._readers):
            splitter = self._readers[fd]
            for _ in range(_FINAL_READS):
                try:
                    data = os.read(fd, READ_SIZE)
                except (BlockingIOError, InterruptedError, OSError):
                    data = b""
                if not data:
                    break
                splitter.feed(data)
            self._done(fd)

    def close(self) -> None:
        """Release everything without passing anything on (spawn failed, or a bug)."""
        for fd in self.child_ends:
            os.close(fd)
        self.child_ends.clear()
        for fd in self._readers:
            if self._loop is not None:
                self._loop.remove_reader(fd)
            os.close(fd)
        self._readers.clear()

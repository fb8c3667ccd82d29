"""Where a service's output goes: ``Service(output=...)``.

* ``"inherit"``: the service writes to the supervisor's stdout/stderr directly.
* ``"prefix"``: each line is written to the supervisor's stdout as
  ``name | line``, the names padded to one width and coloured (on a terminal, or
  when forced). Control characters and escape sequences in the line are made
  visible (``\x1b``), so a service cannot move the cursor or retitle the terminal;
  ``raw_output`` keeps its colours (see ``_terminal.py``).
* a path (``str`` or :class:`os.PathLike`): lines are appended to that file.
* a :class:`~._logfile.LogFile`: the same, rotated by size (see ``_logfile.py``).
  Files are opened through the supervisor's :class:`~._logfile.LogFiles`: one
  writer per file, shared by every service that writes to it.
* a callable: called as ``callback(name, line)`` with each decoded line (no newline).

In every mode but ``"inherit"`` the service's stdout and stderr share one pipe (as
in foreman and honcho), so their lines stay in the order they were written. A line
is passed on as soon as its newline arrives, whole: lines of different services
never interleave mid-line. An unterminated line is passed on at EOF, or when it
reaches 64 KiB.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TextIO, Union

from ._logfile import LogFile, LogFiles, LogFileWriter, log_file_of
from ._terminal import has_controls, neutralise

__all__ = ["LINE_LIMIT", "LineSplitter", "OutputSpec", "PrefixWriter", "Sink", "make_sink"]

LINE_LIMIT = 65536

OutputSpec = Union[str, "os.PathLike[str]", LogFile, Callable[[str, str], object]]

# Bold-free ANSI colours, chosen to be readable on dark and light terminals.
_COLOURS = ("36", "33", "32", "35", "34", "31", "96", "93", "92", "95", "94", "91")


def colour_wanted(stream: TextIO, force: bool | None) -> bool:
    """``force`` if given; else ``NO_COLOR``/``FORCE_COLOR``; else whether it is a tty."""
    if force is not None:
        return force
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class PrefixWriter:
    """Writes ``name | line`` lines to one stream, for all the services of a supervisor.

    Each line is written and flushed with one ``write`` call on the loop thread, so
    lines never mix. Writing blocks if the stream does (a pipe nobody reads), as
    ``print()`` would; the services then block on their own pipes in turn.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        color: bool | None = None,
        min_width: int = 0,
        raw_output: bool = False,
    ) -> None:
        self._stream = stream
        self._raw_output = raw_output
        self._color = color
        self._min_width = min_width
        self._names: dict[str, str] = {}  # name -> colour code
        self.width = min_width

    @property
    def stream(self) -> TextIO:
        return sys.stdout if self._stream is None else self._stream

    def register(self, name: str) -> None:
        if name not in self._names:
            self._names[name] = _COLOURS[len(self._names) % len(_COLOURS)]
            self.width = max(self.width, len(name))

    def write(self, name: str, line: str, colour: str | None = None) -> None:
        stream = self.stream
        label = name.ljust(self.width)
        if colour_wanted(stream, self._color):
            code = colour or self._names.get(name, "1")
            label = f"\x1b[{code}m{label} |\x1b[0m"
        else:
            label = f"{label} |"
        if has_controls(line):  # untrusted bytes: no cursor moves, no titles
            line = neutralise(line, self._raw_output)
        try:
            stream.write(f"{label} {line}\n")
            stream.flush()
        except (BrokenPipeError, ValueError):  # our stdout went away: nowhere to write
            pass


class Sink:
    """Receives the lines of one service's run."""

    def line(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _PrefixSink(Sink):
    def __init__(self, writer: PrefixWriter, name: str) -> None:
        self._writer = writer
        self._name = name

    def line(self, data: bytes) -> None:
        self._writer.write(self._name, data.decode(errors="replace"))


class _FileSink(Sink):
    def __init__(self, logs: LogFiles, spec: LogFile) -> None:
        # One writer per file, shared (O_APPEND: each block lands at the end in
        # one write, even if other programs append to the file too).
        self._logs = logs
        self._writer: LogFileWriter | None = logs.open(spec)

    def line(self, data: bytes) -> None:
        if self._writer is not None:
            self._writer.write(data + b"\n")

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            self._logs.release(writer)


class _CallableSink(Sink):
    def __init__(self, callback: Callable[[str, str], object], name: str) -> None:
        self._callback = callback
        self._name = name

    def line(self, data: bytes) -> None:
        self._callback(self._name, data.decode(errors="replace"))


def make_sink(output: OutputSpec, name: str, writer: PrefixWriter, logs: LogFiles) -> Sink | None:
    """The sink for one run of a service; None for ``"inherit"``.

    Raises :class:`OSError` if its log file cannot be opened.
    """
    if output == "inherit":
        return None
    if output == "prefix":
        return _PrefixSink(writer, name)
    spec = log_file_of(output)
    if spec is not None:
        return _FileSink(logs, spec)
    assert callable(output)
    return _CallableSink(output, name)


class LineSplitter:
    """Cuts a byte stream into lines for a sink and for line watchers (ReadyLine)."""

    def __init__(self, sink: Sink, on_line: Callable[[str], None] | None = None) -> None:
        self._sink = sink
        self._on_line = on_line
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data
        start = 0
        while True:
            end = self._buf.find(b"\n", start)
            if end < 0:
                break
            self._emit(bytes(self._buf[start:end]))
            start = end + 1
        del self._buf[:start]
        while len(self._buf) >= LINE_LIMIT:
            self._emit(bytes(self._buf[:LINE_LIMIT]))
            del self._buf[:LINE_LIMIT]

    def flush(self) -> None:
        if self._buf:
            self._emit(bytes(self._buf))
            self._buf.clear()

    def _emit(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        self._sink.line(line)
        if self._on_line is not None:
            self._on_line(line.decode(errors="replace"))

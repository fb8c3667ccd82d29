"""Log files with size-based rotation: ``Service(output=LogFile(...))``.

:class:`LogFile` is the public description (a path, ``max_bytes``, ``backups``).
A :class:`LogFileWriter` appends to one file; :class:`LogFiles` is a supervisor's
registry of them, one writer per file (the key is the file's real path when it is
opened) shared by every service, and every run, that writes to it, so that a
shared file is rotated once and never by two writers at the same time.

Rotation is as supervisord's and Python's ``RotatingFileHandler``: when a block of
lines would take the file past ``max_bytes``, it is split at the last line that
fits, the file is renamed ``PATH.1`` (``PATH.1`` to ``PATH.2``, ... the oldest
beyond ``backups`` dropped), and the rest goes to a new, empty ``PATH``. Lines are
never split across files: a file holds more than ``max_bytes`` only when one line
alone is longer.

Write errors (a full disk, EIO, a file too large) never stop a service nor the
pump that reads its output: the block that cannot be written is dropped (counted
in :attr:`LogFileWriter.dropped`), and the first error of a run of them is
reported through the event loop's exception handler (``logging`` outside a
loop). Writing is tried again with the next block; once one succeeds, the next
error is reported again. A line cut short by a failed write is ended with a
newline before the next one, so that the two are not glued together. A rotation
that fails (a rename refused) is reported once too: the lines keep going to the
file, past ``max_bytes``, and rotation is tried again each time another
``max_bytes`` have been written, until one succeeds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
from collections.abc import Callable

__all__ = ["LogFile", "LogFileWriter", "LogFiles"]

log = logging.getLogger("aioproc")

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC

#: The largest ``max_bytes``: a file offset (off_t) is 63 bits.
MAX_BYTES = 2**63 - 1

#: Called with a one-line message and the error, once per run of failures.
ErrorReport = Callable[[str, OSError], None]


def _count(value: object, name: str, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"LogFile: {name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= high:
        raise ValueError(f"LogFile: {name} must be between 0 and {high}, not {value}")
    return value


@dataclasses.dataclass(frozen=True)
class LogFile:
    """A log file for ``Service(output=...)``, rotated by size.

    ``path``: appended to (created with mode 0644 if missing; relative to the
    supervisor's working directory). ``max_bytes``: once the file would grow past
    it, it is renamed ``PATH.1`` and a new one started (0: never, as a plain path
    does). ``backups``: how many old files are kept (``PATH.1`` the newest up to
    ``PATH.<backups>``; 0: the file is emptied instead). Rotation happens between
    lines only. :meth:`Supervisor.reopen_logs` opens it again (after logrotate moved
    it away).

    Raises :class:`TypeError` or :class:`ValueError` for a bad value.
    """

    path: str | os.PathLike[str]
    max_bytes: int = 0
    backups: int = 5

    def __post_init__(self) -> None:
        if not isinstance(self.path, (str, os.PathLike)):
            raise TypeError(
                f"LogFile: path must be a str or a path, not {type(self.path).__name__}"
            )
        text = os.fspath(self.path)
        if not isinstance(text, str):
            raise TypeError("LogFile: path must be a str or a path of str, not of bytes")
        if not text:
            raise ValueError("LogFile: path must not be empty")
        if "\0" in text:
            raise ValueError("LogFile: path must not hold a NUL character")
        _count(self.max_bytes, "max_bytes", MAX_BYTES)
        _count(self.backups, "backups", MAX_BYTES)

    @property
    def rotation(self) -> tuple[int, ...]:
        """What decides how the file is rotated: ``()`` for a file never rotated."""
        return (self.max_bytes, self.backups) if self.max_bytes else ()


def _report_to_loop(message: str, exc: OSError) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        log.error("%s", message)
        return
    loop.call_exception_handler({"message": message, "exception": exc})


class LogFileWriter:
    """Appends blocks of whole lines to one file, rotating it by size.

    One ``write`` per block, looping on short writes; the size is the file's at
    open (``fstat``) plus what this writer wrote since (what another program
    appends is seen at the next open). Used on the event loop's thread only.
    """

    def __init__(self, spec: LogFile, path: str, on_error: ErrorReport = _report_to_loop) -> None:
        #: The file's real path (symbolic links resolved at open): what is renamed.
        self.path = path
        self.max_bytes = spec.max_bytes
        self.backups = spec.backups
        #: Bytes dropped because they could not be written.
        self.dropped = 0
        self._on_error = on_error
        self._failing = False  # a write error was reported, and nothing written since
        self._stuck = False  # a rotation error was reported, and no rotation done since
        self._cut = False  # the file ends in a line cut short by a failed write
        self._fd = -1
        self.size = 0
        self._open()  # OSError: the caller (a service's start) fails with it

    def _open(self) -> None:
        fd = os.open(self.path, _FLAGS, 0o644)
        try:
            size = os.fstat(fd).st_size
        except OSError:  # pragma: no cover - fstat of a descriptor just opened
            os.close(fd)
            raise
        old, self._fd, self.size = self._fd, fd, size
        self._cut = False  # a line cut short stays so in the old file, not in this one
        if old >= 0:
            os.close(old)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def set_rotation(self, spec: LogFile) -> None:
        self.max_bytes = spec.max_bytes
        self.backups = spec.backups

    # ------------------------------------------------------------------ writing
    def write(self, block: bytes) -> None:
        """Append ``block``, one or more whole lines (each ending in ``\\n``).

        Never raises for a write error: see the module's docstring.
        """
        if self._fd < 0:
            self.dropped += len(block)
            return
        limit = self.max_bytes
        if not limit or self.size + len(block) <= limit:
            self._put(block)  # the hot path: one write, no copy
            return
        view = memoryview(block)
        start, end = 0, len(block)
        while start < end:
            room = limit - self.size
            if end - start <= room:
                self._put(view[start:])
                return
            # The last newline that fits: one C-level search, not a loop over lines.
            cut = block.rfind(b"\n", start, start + room) if room > 0 else -1
            if cut >= 0:
                if not self._put(view[start : cut + 1]):
                    return
                start = cut + 1
                self._rotate()
            elif self.size == 0:
                # One line longer than max_bytes: alone in its file, whole.
                nl = block.find(b"\n", start)
                stop = end if nl < 0 else nl + 1
                if not self._put(view[start:stop]):
                    return
                start = stop
            else:
                self._rotate()

    def _put(self, data: bytes | memoryview) -> bool:
        """Write all of ``data``; False (reported, the rest dropped) on an error."""
        fd = self._fd
        total = len(data)
        done = 0
        try:
            if self._cut:
                self.size += os.write(fd, b"\n")
                self._cut = False
            done = os.write(fd, data)
            self.size += done
            if done < total:  # short: the disk filling up (the next write says why)
                view = memoryview(data)
                while done < total:
                    n = os.write(fd, view[done:])
                    if n == 0:  # pragma: no cover - not for a regular file
                        raise OSError(errno.EIO, os.strerror(errno.EIO))
                    done += n
                    self.size += n
        except OSError as exc:
            self.dropped += total - done
            if done:
                self._cut = True
            if not self._failing:
                self._failing = True
                self._on_error(
                    f"aioproc: cannot write to log file {self.path!r}: {_reason(exc)} "
                    "(its lines are dropped until it can be written again)",
                    exc,
                )
            return False
        self._failing = False
        return True

    # ----------------------------------------------------------------- rotating
    def _rotate(self) -> None:
        """``PATH.<n-1>`` -> ``PATH.<n>`` ... ``PATH`` -> ``PATH.1``, then a new ``PATH``."""
        try:
            if self.backups == 0:
                os.ftruncate(self._fd, 0)
                self.size = 0
            else:
                self._shift()
                # Our descriptor followed the file to PATH.1; the next lines go to a new PATH.
                self._open()
        except OSError as exc:
            # Keep writing where we are rather than lose lines; try again once
            # another max_bytes have been written, not at every block.
            self.size = 0
            if not self._stuck:
                self._stuck = True
                self._on_error(
                    f"aioproc: cannot rotate log file {self.path!r}: {_reason(exc)} "
                    "(still writing to it; tried again every max_bytes)",
                    exc,
                )
        else:
            self._stuck = False

    def _shift(self) -> None:
        # Only the backups that exist are moved: a scan up to the first gap, so
        # that a large ``backups`` costs nothing until there are that many files.
        top = 1
        while top < self.backups and os.path.lexists(f"{self.path}.{top}"):
            top += 1
        for n in range(top - 1, 0, -1):
            os.rename(f"{self.path}.{n}", f"{self.path}.{n + 1}")  # replaces the oldest
        try:
            os.rename(self.path, f"{self.path}.1")
        except FileNotFoundError:
            pass  # moved away by someone else, and not reopened yet: start a new one

    # ---------------------------------------------------------------- reopening
    def reopen(self) -> None:
        """Close the file and open ``path`` again (a new, empty one if it was moved away).

        Raises :class:`OSError` if it cannot be opened; the old file is then
        kept, and written to.
        """
        self._open()
        self._failing = self._stuck = False

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def _reason(exc: OSError) -> str:
    return f"[Errno {exc.errno}] {exc.strerror}" if exc.strerror else str(exc)


class LogFiles:
    """A supervisor's open log files: one shared, counted writer per file."""

    def __init__(self, on_error: ErrorReport = _report_to_loop) -> None:
        self._on_error = on_error
        self._writers: dict[str, tuple[LogFileWriter, int]] = {}

    def open(self, spec: LogFile) -> LogFileWriter:
        """The writer of ``spec``'s file (opened now, or shared); :meth:`release` it.

        Raises :class:`OSError` if the file cannot be opened.
        """
        key = os.path.realpath(spec.path)
        entry = self._writers.get(key)
        if entry is None:
            writer = LogFileWriter(spec, key, self._on_error)
            self._writers[key] = (writer, 1)
            return writer
        writer, count = entry
        # The latest settings win (a reconfigured service, while another that
        # shares its file still runs with the old ones).
        writer.set_rotation(spec)
        self._writers[key] = (writer, count + 1)
        return writer

    def release(self, writer: LogFileWriter) -> None:
        """One user fewer; the file is closed with the last."""
        entry = self._writers.get(writer.path)
        if entry is None or entry[0] is not writer:
            return
        if entry[1] > 1:
            self._writers[writer.path] = (writer, entry[1] - 1)
            return
        del self._writers[writer.path]
        writer.close()

    @property
    def paths(self) -> list[str]:
        return list(self._writers)

    def reopen(self) -> list[str]:
        """Open every file again; their paths.

        Every file is tried; then the first :class:`OSError`, if any, is raised
        (naming its file). A file that could not be opened again is still
        written where it was.
        """
        first: OSError | None = None
        for path, (writer, _) in list(self._writers.items()):
            try:
                writer.reopen()
            except OSError as exc:
                if first is None:
                    first = OSError(exc.errno, f"cannot reopen log file {path!r}: {_reason(exc)}")
        if first is not None:
            raise first
        return list(self._writers)


def log_file_of(output: object) -> LogFile | None:
    """The :class:`LogFile` an ``output`` writes to (a path means: never rotated), or None."""
    if isinstance(output, LogFile):
        return output
    if isinstance(output, (str, os.PathLike)) and output not in ("prefix", "inherit"):
        return LogFile(output, max_bytes=0)
    return None

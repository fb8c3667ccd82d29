"""The last lines of each service's output, and a way to follow new ones.

A :class:`~aioproc.supervisor.Supervisor` keeps, per service, the last
``log_lines`` lines (1,000 by default) that its piped output produced (every
``output`` but ``"inherit"``, whose lines never pass through the supervisor).
:meth:`Supervisor.logs` reads them; :meth:`Supervisor.follow_logs` returns a
:class:`LogStream` of the lines from that moment on. Both are synchronous, so
``sup.logs(...)`` then ``sup.follow_logs(...)`` with no ``await`` between them
see every line exactly once: nothing can be recorded in between.

A line is the decoded text (invalid UTF-8 replaced) of one line of output, without
its newline (or a CR before it), as the service wrote it: untrusted text that may
hold escape sequences. Whoever shows it on a terminal must neutralise them.

Output arrives in blocks of whole lines (``_output.py``), and the history keeps the
blocks as they came: a line becomes a :class:`LogLine` only when someone reads it
(:meth:`LogHistory.last`) or follows it, so a chatty service costs no Python work per
line here. A block counts its lines with ``bytes.count`` and the oldest blocks are
dropped once the newer ones hold ``log_lines`` lines.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable, Collection

from ._output import split_lines
from ._queue import DroppingQueue

__all__ = ["LogHistory", "LogLine", "LogStream"]


@dataclasses.dataclass(frozen=True)
class LogLine:
    """One line of a service's output, from :meth:`Supervisor.logs` and ``follow_logs``."""

    service: str
    time: float  #: ``time.time()`` when the line was read (wall clock, for people)
    text: str  #: the line, decoded, without its newline
    seq: int = dataclasses.field(default=0, compare=False)  #: order across services


class LogStream(DroppingQueue[LogLine]):
    """The lines of one :meth:`Supervisor.follow_logs` call, from that call on.

    An async iterator (it ends once the supervisor has shut down and every queued
    line was read) and an async context manager (closing on exit). The queue holds
    ``maxsize`` lines; when a reader falls behind the oldest are dropped and
    :attr:`dropped` grows, so a slow reader never holds the supervisor back.
    """

    def __init__(
        self,
        names: Collection[str] | None,
        maxsize: int,
        on_close: Callable[[LogStream], object],
    ) -> None:
        super().__init__(maxsize, on_close)
        self.names = None if names is None else frozenset(names)

    def _put(self, line: LogLine) -> None:
        if self.names is None or line.service in self.names:
            super()._put(line)


class _Block:
    """Lines ``seq`` to ``seq + count - 1`` of the history, read at ``time``."""

    __slots__ = ("count", "data", "seq", "time")

    def __init__(self, seq: int, when: float, data: bytes, count: int) -> None:
        self.seq = seq
        self.time = when
        self.data = data
        self.count = count

    def lines(self, name: str) -> list[LogLine]:
        return [
            LogLine(name, self.time, text, self.seq + i)
            for i, text in enumerate(split_lines(self.data))
        ]


class _Kept:
    """The blocks of one service holding (at least) its last ``per_service`` lines."""

    __slots__ = ("blocks", "count")

    def __init__(self) -> None:
        self.blocks: deque[_Block] = deque()
        self.count = 0


class LogHistory:
    """The bounded per-service line buffers of one supervisor, and their followers."""

    def __init__(self, per_service: int) -> None:
        if isinstance(per_service, bool) or not isinstance(per_service, int):
            raise TypeError("log_lines must be an int")
        if per_service < 0:
            raise ValueError("log_lines must not be negative")
        self.per_service = per_service
        self._kept: dict[str, _Kept] = {}
        self._followers: list[LogStream] = []
        self._seq = 1  # the number of the next line, across services
        self._closed = False

    def register(self, name: str) -> None:
        self._kept.setdefault(name, _Kept())

    def forget(self, name: str) -> None:
        self._kept.pop(name, None)

    def record_block(self, name: str, data: bytes, when: float | None = None) -> None:
        """``data``: whole lines, each ending in ``\\n``, read at ``when`` (default: now)."""
        count = data.count(b"\n")
        block = _Block(self._seq, time.time() if when is None else when, data, count)
        self._seq += count
        kept = self._kept.get(name)
        if kept is not None and self.per_service:
            kept.blocks.append(block)
            kept.count += count
            while kept.count - kept.blocks[0].count >= self.per_service:
                kept.count -= kept.blocks.popleft().count
        followers = [s for s in self._followers if s.names is None or name in s.names]
        if followers:
            lines = block.lines(name)
            for stream in followers:
                for line in lines:
                    stream._put(line)

    def last(self, names: Collection[str], count: int | None) -> list[LogLine]:
        """The last ``count`` lines (all kept, for None) of ``names``, oldest first."""
        merged: list[LogLine] = []
        for name in names:
            kept = self._kept.get(name)
            if kept is not None:
                lines = [line for block in kept.blocks for line in block.lines(name)]
                merged.extend(lines[-self.per_service :] if self.per_service else ())
        merged.sort(key=lambda line: line.seq)
        if count is not None:
            merged = merged[-count:] if count > 0 else []
        return merged

    def follow(self, names: Collection[str] | None, maxsize: int) -> LogStream:
        stream = LogStream(names, maxsize, self._followers.remove)
        if self._closed:
            stream._close()
        else:
            self._followers.append(stream)
        return stream

    def close(self) -> None:
        """The supervisor has shut down: end every follower (after its queued lines)."""
        self._closed = True
        for stream in self._followers:
            stream._close()
        self._followers.clear()

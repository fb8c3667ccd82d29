"""The supervisor's console: where ``output="prefix"`` services and the supervisor's
own messages are written, as text (``name | line``) or as JSON lines.

**Text** (``log_format="text"``, the default, as foreman and honcho)::

    web    | GET / 200
    worker | job 17 done

Names are padded to one width (it grows as services are added) and coloured on a
terminal (``color``, else ``NO_COLOR``/``FORCE_COLOR``, else whether the stream is a
tty). ``timestamps="clock"`` starts each line with the local time as honcho does
(``03:23:12 web | ...``), ``timestamps="iso"`` with ISO 8601 local time to the
millisecond and its UTC offset (``2026-12-06T03:23:12.345+00:00 web | ...``). With
``mark_stderr`` a service's stderr lines have ``!`` where its stdout lines have
``|`` (``web ! warning``). Control characters and escape sequences are shown escaped
(``_terminal.py``).

**JSON** (``log_format="json"``): one object per line, for log shippers::

    {"time": "2026-12-06T03:23:12.345+00:00", "service": "web", "stream": "stdout",
     "pid": 12, "line": "GET / 200"}
    {"time": "...", "event": "exited", "message": "web exited with code 1",
     "service": "web", "pid": 12, "exit_code": 1, ...}

(one line each; wrapped here).

Service lines carry ``time``, ``service``, ``stream`` (``"stdout"`` or
``"stderr"``), ``pid`` and ``line`` (decoded as UTF-8; bytes that are not UTF-8
are kept as ``\\xNN`` text, control characters are JSON escapes, so nothing a
service writes can break the line or the next one). The supervisor's own lines
carry ``event`` (``"message"`` for plain messages) and ``message``, plus the
event's fields.

The time is when the supervisor read the line from the pipe: lines read in one
chunk share it. Lines are written whole, a chunk at a time, each chunk with one
``write`` on the loop thread: the lines of two services never mix. Writing blocks
if the stream does (a pipe nobody reads), as ``print()`` would; the services then
block on their own pipes in turn.

**Speed.** This is the hot path of a chatty service. A chunk of plain lines
(printable ASCII and tabs; in JSON mode no quote or backslash either, which
``bytes.translate`` finds in C) is prefixed with one ``bytes.replace``: no Python
code runs per line. Other chunks (UTF-8 text, escapes, CRLF) take a per-line path.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
import time
from typing import BinaryIO, Literal, TextIO

from ._events import Event
from ._terminal import has_controls, neutralise

__all__ = ["Console", "LogFormat", "Timestamps", "colour_wanted"]

LogFormat = Literal["text", "json"]
Timestamps = Literal["clock", "iso"]

# Bold-free ANSI colours, chosen to be readable on dark and light terminals.
_COLOURS = ("36", "33", "32", "35", "34", "31", "96", "93", "92", "95", "94", "91")
#: Bytes a terminal shows as they are: printable ASCII, TAB, and the newline
#: between lines. A chunk made of these only needs its prefixes.
_PLAIN = bytes(range(0x20, 0x7F)) + b"\t\n"
#: Bytes a JSON string may hold as they are (no quote, backslash or control).
_JSON_PLAIN = bytes(c for c in range(0x20, 0x7F) if c not in b'"\\') + b"\n"


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


def iso_time(when: float) -> str:
    """``when`` as ISO 8601 local time with milliseconds and the UTC offset."""
    return _iso_clock.format(when)


class _IsoClock:
    """ISO 8601 times, the date, time and offset formatted once per second.

    ``datetime.fromtimestamp(...).astimezone()`` costs microseconds (a time-zone
    lookup); a chunk of output needs one time, and a chatty service sends tens of
    thousands of chunks a second.
    """

    def __init__(self) -> None:
        self._second = -1
        self._head = ""
        self._offset = ""

    def format(self, when: float) -> str:
        # Rounded to the microsecond first, as datetime.fromtimestamp() does.
        second = int(when // 1)
        micros = round((when - second) * 1e6)
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        if second != self._second:
            moment = datetime.datetime.fromtimestamp(second).astimezone()
            text = moment.isoformat(timespec="seconds")
            self._head, self._offset = text[:19], text[19:]
            self._second = second
        return f"{self._head}.{micros // 1000:03d}{self._offset}"


_iso_clock = _IsoClock()


def _event_fields(event: Event) -> dict[str, object]:
    """An event's fields for JSON: its name, and its status as code and signal."""
    fields: dict[str, object] = {}
    for field in dataclasses.fields(event):
        if field.name == "time":  # monotonic: meaningless outside the process
            continue
        value = getattr(event, field.name)
        if field.name == "status":
            fields["exit_code"] = None if value is None else value.exit_code
            fields["signal"] = None if value is None or value.signal is None else value.signal.name
        else:
            fields[field.name] = value
    return fields


def event_name(event: Event) -> str:
    """``Exited`` -> ``"exited"``, ``BackingOff`` -> ``"backing_off"``."""
    name = type(event).__name__
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


class Console:
    """Writes the lines of the ``output="prefix"`` services and the supervisor's own.

    One per :class:`~aioproc.supervisor.Supervisor` (``sup.console``): see the module
    docstring for the formats. :meth:`say` writes one of the supervisor's own lines
    (``aioproc run`` reports its events and signals with it).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        color: bool | None = None,
        min_width: int = 0,
        raw_output: bool = False,
        timestamps: Timestamps | None = None,
        log_format: LogFormat = "text",
        mark_stderr: bool = False,
    ) -> None:
        if timestamps not in (None, "clock", "iso"):
            raise ValueError(f'timestamps must be None, "clock" or "iso", not {timestamps!r}')
        if log_format not in ("text", "json"):
            raise ValueError(f'log_format must be "text" or "json", not {log_format!r}')
        self._stream = stream
        self._raw_output = raw_output
        self._color = color
        self.timestamps = timestamps
        self.log_format = log_format
        #: Whether services get separate stdout and stderr pipes (their lines are
        #: then told apart, at the cost of their relative order).
        self.separate_stderr = mark_stderr or log_format == "json"
        self._names: dict[str, str] = {}  # name -> colour code
        self.width = min_width
        self._labels: dict[tuple[str, bool], bytes] = {}
        self._colour_for: tuple[object, bool] | None = None  # (stream, colour wanted)
        self._second = -1
        self._clock = b""

    # ----------------------------------------------------------------- stream
    @property
    def stream(self) -> TextIO:
        return sys.stdout if self._stream is None else self._stream

    def _colour(self, stream: TextIO) -> bool:
        # Asked once per stream, not per line: isatty() is a system call.
        if self._colour_for is None or self._colour_for[0] is not stream:
            self._colour_for = (stream, colour_wanted(stream, self._color))
            self._labels.clear()
        return self._colour_for[1]

    def _write(self, data: bytes) -> None:
        stream = self.stream
        try:
            binary: BinaryIO | None = getattr(stream, "buffer", None)
            if binary is not None:
                stream.flush()  # whatever was written as text goes first
                binary.write(data)
                binary.flush()
            else:
                stream.write(data.decode("utf-8", "replace"))
                stream.flush()
        except (BrokenPipeError, ValueError):  # our stdout went away: nowhere to write
            pass

    # ----------------------------------------------------------------- labels
    def register(self, name: str) -> None:
        if name not in self._names:
            self._names[name] = _COLOURS[len(self._names) % len(_COLOURS)]
            if len(name) > self.width:
                self.width = len(name)
                self._labels.clear()

    def _label(self, name: str, err: bool, colour: str | None = None) -> bytes:
        key = (name, err) if colour is None else (f"{colour}:{name}", err)
        label = self._labels.get(key)
        if label is None:
            padded = name.ljust(self.width)
            mark = "!" if err else "|"
            if self._colour(self.stream):
                code = colour or self._names.get(name, "1")
                text = f"\x1b[{code}m{padded} {mark}\x1b[0m "
            else:
                text = f"{padded} {mark} "
            label = self._labels[key] = text.encode()
        return label

    def _stamp(self, when: float) -> bytes:
        if self.timestamps is None:
            return b""
        if self.timestamps == "iso":
            return iso_time(when).encode() + b" "
        second = int(when)
        if second != self._second:
            self._second = second
            self._clock = time.strftime("%H:%M:%S ", time.localtime(when)).encode()
        return self._clock

    # ------------------------------------------------------------------ lines
    def lines(self, name: str, block: bytes, err: bool, pid: int, when: float) -> None:
        """Write ``block``: one or more whole lines of a service, each ending in ``\\n``."""
        if self.log_format == "json":
            self._write(self._json_lines(name, block, err, pid, when))
            return
        prefix = self._stamp(when) + self._label(name, err)
        if not block.translate(None, _PLAIN):
            # Printable ASCII only (nearly always): prefixes only, all in C.
            self._write(prefix + block[:-1].replace(b"\n", b"\n" + prefix) + b"\n")
            return
        out = []
        for raw in block[:-1].split(b"\n"):
            text = raw.removesuffix(b"\r").decode("utf-8", "replace")
            if has_controls(text):  # untrusted bytes: no cursor moves, no titles
                text = neutralise(text, self._raw_output)
            out.append(prefix + text.encode())
        out.append(b"")
        self._write(b"\n".join(out))

    def _json_lines(self, name: str, block: bytes, err: bool, pid: int, when: float) -> bytes:
        stream = "stderr" if err else "stdout"
        head = (
            f'{{"time": "{iso_time(when)}", "service": {json.dumps(name)}, '
            f'"stream": "{stream}", "pid": {pid}, "line": '
        ).encode()
        if not block.translate(None, _JSON_PLAIN):
            head += b'"'
            return head + block[:-1].replace(b"\n", b'"}\n' + head) + b'"}\n'
        out = []
        for raw in block[:-1].split(b"\n"):
            text = raw.removesuffix(b"\r").decode("utf-8", "backslashreplace")
            out.append(head + json.dumps(text, ensure_ascii=False).encode() + b"}")
        out.append(b"")
        return b"\n".join(out)

    # ------------------------------------------------------------ the supervisor's
    def say(
        self, text: str, *, label: str = "aioproc", event: Event | None = None, bold: bool = True
    ) -> None:
        """One line of the supervisor's own, labelled ``label``; ``event``: what it reports.

        In JSON mode the line is ``{"time", "event", "message", ...}`` with the
        event's fields (``event: "message"`` without one).
        """
        when = time.time()
        if self.log_format == "json":
            record: dict[str, object] = {
                "time": iso_time(when),
                "event": "message" if event is None else event_name(event),
                "message": text,
            }
            if event is not None:
                record.update(_event_fields(event))
            self._write(json.dumps(record, ensure_ascii=False, default=str).encode() + b"\n")
            return
        if has_controls(text):
            text = neutralise(text)
        label_bytes = self._label(label, False, "1" if bold else None)
        self._write(self._stamp(when) + label_bytes + text.encode() + b"\n")

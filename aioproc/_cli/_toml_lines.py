"""Which line of an ``aioproc.toml`` a key is on, for error messages.

``tomllib`` reports positions for syntax errors only; a value it parsed carries no
line. So this finds it again in the text, best effort, the way a reader would:

* a key ``a.b.c`` of table ``services.web`` is looked for under the header
  ``[services.web.a.b]`` (key ``c``), then ``[services.web.a]`` (key ``b.c``), then
  ``[services.web]`` (key ``a.b.c``); headers may quote their parts;
* within a table's lines (up to the next header), a line whose key is the path or
  a prefix of it counts: ``a.b.c = 1`` (dotted keys), ``a = { b = { c = 1 } }``
  (an inline table: the line of ``a``), the longest match winning;
* failing that, the table's header line; failing that, no line at all.

It does not parse TOML: a multi-line string whose lines look like ``key = ...``, or
a table defined in another way (``[services]`` with ``web.command = ...``) can
lead it to a wrong line or none. Messages still name the key, so a wrong line
costs a reader a moment, never the meaning.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["KeyLines"]

_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r"\"(?:[^\"\\]|\\.)*\"|'[^']*'"
_PART = rf"(?:{_BARE}|{_QUOTED})"
_KEY = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")
_HEADER = re.compile(rf"^\s*\[\[?\s*({_PART}(?:\s*\.\s*{_PART})*)\s*\]")
_SPLIT = re.compile(rf"({_PART})")


def _parts(dotted: str) -> tuple[str, ...]:
    """The parts of a dotted key, quotes removed (escapes inside them are not decoded)."""
    return tuple(
        token[1:-1] if token[:1] in ('"', "'") else token for token in _SPLIT.findall(dotted)
    )


class KeyLines:
    """Finds table headers and keys in the text of one TOML file (1-based line numbers)."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()
        # header line index -> its dotted path; and each line's key path, if any
        self._headers: dict[int, tuple[str, ...]] = {}
        self._keys: dict[int, tuple[str, ...]] = {}
        for i, line in enumerate(self._lines):
            m = _HEADER.match(line)
            if m:
                self._headers[i] = _parts(m.group(1))
                continue
            m = _KEY.match(line)
            if m:
                self._keys[i] = _parts(m.group(1))

    def header(self, table: Sequence[str]) -> int | None:
        """The line of ``[table]`` (or ``[[table]]``), or None."""
        wanted = tuple(table)
        for i, parts in self._headers.items():
            if parts == wanted:
                return i + 1
        return None

    def _in_section(self, start: int | None, path: tuple[str, ...]) -> int | None:
        """The line in the section after header line ``start`` (None: top) best matching."""
        first = 0 if start is None else start  # start is 1-based: the next index
        best, best_len = None, 0
        for i in range(first, len(self._lines)):
            if i in self._headers:
                break
            key = self._keys.get(i)
            if key and key == path[: len(key)] and len(key) > best_len:
                best, best_len = i + 1, len(key)
        return best

    def find(self, table: Sequence[str], path: Sequence[str] = ()) -> int | None:
        """The line of key ``path`` in ``table`` (``()``: the top level), best effort."""
        table, path = tuple(table), tuple(path)
        for n in range(len(path), -1, -1):  # n parts of the path in a header
            sub = table + path[:n]
            start = self.header(sub) if sub else None
            if sub and start is None:
                continue
            rest = path[n:]
            if not rest:
                return start  # the path names a table of its own
            found = self._in_section(start, rest)
            if found is not None:
                return found
        return self.header(table) if table else None

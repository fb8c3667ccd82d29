"""Making a service's output safe to show on the operator's terminal (prefix mode).

A service's output is untrusted bytes. Written as is after a ``name |`` prefix, a
carriage return or a cursor movement (``\\r\\x1b[2Kweb | FAKE``) rewrites the line,
prefix included, so one service can pass its lines off as another's; an OSC
sequence (``\\x1b]0;title\\x07``) changes the terminal's title, and some terminals
do worse with others. :func:`neutralise` makes every control character visible
instead:

* C0 controls but TAB (``\\x00``-``\\x1f``), DEL (``\\x7f``) and the C1 controls
  (``\\x80``-``\\x9f``, which some terminals act on like ESC sequences) are shown as
  ``\\xNN``: ESC is ``\\x1b``, CR ``\\x0d``, BS ``\\x08``. What followed an ESC is then
  plain text (``\\x1b[2K`` prints as the seven characters ``\\x1b[2K``).
* TAB stays (it moves the cursor forward within the line only).
* With ``keep_sgr`` (``raw_output``), SGR sequences (``ESC [ digits;... m``:
  colours, bold, underline...) are kept, and the line ends with a reset
  (``\\x1b[0m``) so a colour cannot spill onto the next line's prefix. Every other
  sequence is still escaped: nothing a service writes can move the cursor.

A backslash the service wrote is left alone, so the escapes are for reading, not a
reversible encoding. Lines without any control character (nearly all of them) are
returned unchanged after one regex scan in C: this sits on the output hot path.
"""

from __future__ import annotations

import re

__all__ = ["has_controls", "neutralise"]

#: What is unsafe: C0 controls but TAB, DEL, C1 controls.
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
#: An SGR sequence (kept with keep_sgr), else one unsafe character.
#: ``has_controls(line)``: the fast check (one C scan), for callers on the hot path.
has_controls = _UNSAFE.search
_SGR_OR_UNSAFE = re.compile("(\x1b\\[[0-9;:]*m)|[\x00-\x08\x0a-\x1f\x7f-\x9f]")

_ESCAPED = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x09}
_TABLE = str.maketrans({chr(c): e for c, e in _ESCAPED.items()})


def neutralise(line: str, keep_sgr: bool = False) -> str:
    """``line`` with its control characters made visible (see the module docstring)."""
    if _UNSAFE.search(line) is None:
        return line
    if not keep_sgr:
        return line.translate(_TABLE)
    kept = False

    def keep(match: re.Match[str]) -> str:
        nonlocal kept
        if match.group(1) is not None:
            kept = True
            return match.group(1)
        return _ESCAPED[ord(match.group(0))]

    out = _SGR_OR_UNSAFE.sub(keep, line)
    return out + "\x1b[0m" if kept else out

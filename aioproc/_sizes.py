"""Sizes in bytes written as text: the one grammar for every size aioproc reads.

A leaf module, stateless, importing nothing of aioproc's: ``cgroup_limits``'s
``memory_max`` (``_cgroup.py``) and the log files' ``max_bytes`` (``aioproc run``'s
configuration) both read sizes with it.
"""

from __future__ import annotations

import re

__all__ = ["parse_size"]

# Digits, then an optional binary unit: "4096", "512M", "10 KiB", "1gb" (K, M, G, T
# are powers of 1024, as in cgroup's memory.max and systemd's MemoryMax=).
_SIZE = re.compile(r"(\d+)\s*([KMGT]?)i?B?", re.IGNORECASE)


def parse_size(text: str) -> int | None:
    """The number of bytes ``text`` says (``"512M"`` -> 536870912), or None if it is not a size.

    Surrounding blanks are ignored; the unit is one of K, M, G, T (powers of
    1024, in either case), optionally followed by ``iB`` or ``B``. The caller
    checks the range and words its own error.
    """
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        return None
    scale: int = 1024 ** " KMGT".index(m.group(2).upper() or " ")
    return int(m.group(1)) * scale

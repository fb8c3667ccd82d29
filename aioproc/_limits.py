"""Resource limits (``rlimits=``): names, values and their checks.

``spawn(rlimits={"nofile": 1024, "as": (2**30, None), "core": 0})`` sets the
child's resource limits between fork and exec, so the program starts with them
(``setrlimit(2)``; they are inherited by everything it forks). This module only
turns the user's mapping into checked ``(resource, soft, hard)`` triples; the
fork/exec step applies them (``_spawn/``: in the C step with a raw
``prlimit64`` system call in the child, in the fallback from a ``preexec_fn``).

A value is an int (soft and hard limit both), ``None``/``"infinity"``
(unlimited), or a pair ``(soft, hard)`` of those. Everything the kernel would
refuse and that can be known beforehand is refused here, with nothing spawned:
an unknown name, a negative or oversized number, soft above hard, ``nofile``
above ``fs.nr_open``, and a hard limit above ours without ``CAP_SYS_RESOURCE``
(which root has, unless a container took it away: only that capability lets
a process raise a hard limit).

A leaf module: it imports nothing of aioproc's.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping

__all__ = ["RLIMIT_NAMES", "RlimitValue", "check_rlimits", "describe"]

#: The limits by the name ``rlimits=`` takes (``RLIMIT_`` and lower case dropped).
RLIMIT_NAMES: dict[str, int] = {
    name[len("RLIMIT_") :].lower(): getattr(resource, name)
    for name in sorted(dir(resource))
    if name.startswith("RLIMIT_") and name != "RLIMIT_OFILE"  # OFILE: BSD's NOFILE
}

INFINITY = resource.RLIM_INFINITY
_MAX = 2**63 - 1  # rlim_t is 64 bits; above this the kernel means "unlimited"
_INFINITY_WORDS = ("infinity", "unlimited")

RlimitValue = int | str | None | tuple[int | str | None, int | str | None]


def _one(name: str, value: object) -> int:
    if value is None or (isinstance(value, str) and value.lower() in _INFINITY_WORDS):
        return INFINITY
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"rlimits[{name!r}]: {value!r} is not a limit "
            "(an int, None or 'infinity', or a (soft, hard) pair of those)"
        )
    if value < 0:
        raise ValueError(f"rlimits[{name!r}]: {value} is negative")
    if value > _MAX:
        raise ValueError(f"rlimits[{name!r}]: {value} is too large (at most 2**63 - 1)")
    return value


def _key(limit: int) -> int:
    """Order limits with "unlimited" above every number."""
    return _MAX + 1 if limit == INFINITY else limit


def describe(limit: int) -> str:
    return "infinity" if limit == INFINITY else str(limit)


def _nr_open() -> int | None:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


_CAP_SYS_RESOURCE = 24


def _may_raise_hard_limits() -> bool:
    """Whether we have CAP_SYS_RESOURCE (from /proc/self/status; else: are we root)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_RESOURCE & 1)
    except (OSError, ValueError):
        pass
    return os.geteuid() == 0


def check_rlimits(rlimits: object) -> tuple[tuple[int, int, int], ...]:
    """Check ``rlimits=`` and return ``(resource, soft, hard)`` triples, sorted.

    Raises TypeError/ValueError for a bad mapping, name or value, and
    PermissionError for a hard limit above ours without CAP_SYS_RESOURCE.
    """
    if not isinstance(rlimits, Mapping):
        raise TypeError(
            f"rlimits must be a mapping of limit names to values, not {type(rlimits).__name__}"
        )
    privileged: bool | None = None
    out = []
    seen: dict[int, str] = {}
    for name, value in rlimits.items():
        if not isinstance(name, str):
            raise TypeError(f"rlimits: the names are strings, not {type(name).__name__}")
        res = RLIMIT_NAMES.get(name.lower())
        if res is None:
            known = ", ".join(sorted(RLIMIT_NAMES))
            raise ValueError(f"rlimits: unknown limit {name!r} (known: {known})")
        if res in seen:
            raise ValueError(f"rlimits: {name!r} and {seen[res]!r} name the same limit")
        seen[res] = name
        if isinstance(value, (tuple, list)):
            if len(value) != 2:
                raise ValueError(
                    f"rlimits[{name!r}]: a pair (soft, hard) has 2 items, not {len(value)}"
                )
            soft, hard = _one(name, value[0]), _one(name, value[1])
        else:
            soft = hard = _one(name, value)
        if _key(soft) > _key(hard):
            raise ValueError(
                f"rlimits[{name!r}]: the soft limit {describe(soft)} is above "
                f"the hard limit {describe(hard)}"
            )
        if res == resource.RLIMIT_NOFILE:
            nr_open = _nr_open()
            if nr_open is not None and _key(hard) > nr_open:
                raise ValueError(
                    f"rlimits['nofile']: {describe(hard)} is above the kernel's "
                    f"maximum (fs.nr_open = {nr_open})"
                )
        ours = resource.getrlimit(res)[1]
        if _key(hard) > _key(ours):
            if privileged is None:
                privileged = _may_raise_hard_limits()
            if not privileged:
                raise PermissionError(
                    f"rlimits[{name!r}]: the hard limit {describe(hard)} is above ours "
                    f"({describe(ours)}); raising a hard limit needs CAP_SYS_RESOURCE"
                )
        out.append((res, soft, hard))
    out.sort()
    return tuple(out)

"""CPU time and resident memory of the services, from ``/proc``.

One scan of ``/proc`` per call, whatever the number of services: each live
process whose process group is a service's group (``kill_group=True``, the
default: the group the service leads) or whose PID is a service's
(``kill_group=False``) is added to that service. A process's CPU time is
``utime + stime + cutime + cstime`` (its own, and that of its children it has
reaped), so a worker that forked and reaped short-lived children counts them
too; its resident memory is ``rss`` pages. Shared pages are counted once per
process that maps them (as ``ps`` does): the sum is an upper bound.

A process can exit between the listing and the read: it is then skipped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["Usage", "usage"]

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

#: (cpu seconds, resident bytes)
Usage = tuple[float, int]


def usage(groups: Mapping[int, str], pids: Mapping[int, str]) -> dict[str, Usage]:
    """CPU seconds and RSS bytes per service name.

    ``groups``: process group id -> service (services that own their group);
    ``pids``: PID -> service (the others: their process alone).
    """
    ticks: dict[str, int] = {}
    pages: dict[str, int] = {}
    if not groups and not pids:
        return {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        # After the command name (which may hold spaces and parentheses):
        # [0] state, [2] pgrp, [11..14] utime stime cutime cstime, [21] rss.
        fields = data.rsplit(b")", 1)[1].split()
        if fields[0] in (b"Z", b"X", b"x"):
            continue
        name = groups.get(int(fields[2])) or pids.get(int(entry))
        if name is None:
            continue
        ticks[name] = ticks.get(name, 0) + sum(int(v) for v in fields[11:15])
        pages[name] = pages.get(name, 0) + int(fields[21])
    return {name: (ticks[name] / _TICKS, pages[name] * _PAGE) for name in ticks}

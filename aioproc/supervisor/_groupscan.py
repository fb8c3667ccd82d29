"""One /proc scan shared by every service that waits for its process group to empty.

A stop is only done when no live process is left in the service's group, and the
only way to know that on Linux is to scan ``/proc``: one ``stat`` read per process
on the machine. Each service scanning for itself made a shutdown of N services cost
N scans of (at least) N processes: quadratic (1,000 services took 10.9 s, 2,000 took
38.9 s, and past that ``shutdown_timeout`` SIGKILLed well-behaved services).

:class:`GroupScanner` makes the scans shared. A waiter asks for the members of its
group and gets them from the next scan, which starts *after* the request (so it sees
every process alive at the time of the request: a group found empty then stays
empty, as only a member can fork a new member). All the requests made before a
scan starts are served by it. Scans are spaced by their own duration, so at most
half of the loop's time goes to scanning however many services stop at once, and a
shutdown costs a number of scans that grows with its duration, not with N.
"""

from __future__ import annotations

import asyncio
import time

from .._procfs import groups

__all__ = ["GroupScanner"]


class GroupScanner:
    """Batches the ``/proc`` scans of one event loop's waiters (see the module docstring)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[asyncio.Future[dict[int, set[int]]]] = []
        self._handle: asyncio.TimerHandle | None = None
        self._not_before = 0.0
        #: How many scans were made (for the tests and the benchmark).
        self.scans = 0

    async def members(self, pgid: int) -> set[int]:
        """The live members of group ``pgid``, from a scan that starts after this call."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new loop: nothing of the old one is usable
            self._loop, self._waiters, self._handle = loop, [], None
        waiter: asyncio.Future[dict[int, set[int]]] = loop.create_future()
        self._waiters.append(waiter)
        if self._handle is None:
            self._handle = loop.call_at(max(loop.time(), self._not_before), self._scan)
        table = await waiter
        return table.get(pgid, set())

    def _scan(self) -> None:
        assert self._loop is not None
        self._handle = None
        waiters, self._waiters = self._waiters, []
        if not any(not w.done() for w in waiters):
            return
        started = time.perf_counter()
        table = groups()
        self.scans += 1
        # Space the scans by their own cost: the loop keeps at least half its time.
        self._not_before = self._loop.time() + (time.perf_counter() - started)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(table)

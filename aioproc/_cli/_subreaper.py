"""``aioproc run`` as a subreaper: adopt what the services leave behind, reap it, stop it.

A service that daemonizes (double-forks, ``setsid``) leaves a process outside its
process group, which the supervisor's group stop cannot reach; once its parent
exits, the kernel re-parents it to the nearest subreaper ancestor, else to PID 1.
``aioproc run`` asks to be that subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``, as
``aioproc init`` does; as PID 1 of a PID namespace it is anyway), so:

* adopted orphans that exit are reaped on each SIGCHLD by ``aioproc.reap_orphans``,
  which never touches a child the supervisor spawned (its status stays the
  supervisor's): run as PID 1 it leaves no zombies;
* at the end, once every service is stopped, whatever is still below it (daemons
  the services started) gets SIGTERM, then SIGKILL after :data:`SWEEP_GRACE`
  seconds, and is reaped: ``aioproc init``'s sweep, the same code.

The spawn pool is set to no workers: every service is forked on the loop thread,
so each child is known to aioproc from the moment it exists and the reaper never
has to wait for a pooled spawn to land (see ``aioproc.reap_orphans``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable

from .. import get_spawn_workers, reap_orphans, set_spawn_workers, signals
from ._init import _sweep, become_subreaper
from ._sweep import Confinement

__all__ = ["SWEEP_GRACE", "adopting"]

#: Seconds between SIGTERM and SIGKILL for what is left below ``aioproc run``.
SWEEP_GRACE = 5.0


@contextlib.asynccontextmanager
async def adopting(log: Callable[[str], None]) -> AsyncIterator[None]:
    """Be a subreaper inside the block; reap orphans; at the end, sweep what is left.

    The process is as before afterwards (no longer a subreaper, its spawn pool back
    to its size), so that ``run_services`` can also run inside another program.
    """
    me = os.getpid()
    subreaper = False
    if me != 1:
        try:
            become_subreaper()
            subreaper = True
        except OSError as exc:
            log(f"warning: {exc}; orphans will go to the system's init")
    workers = get_spawn_workers()
    set_spawn_workers(0)
    # Subscribed before the services exist: no child's exit goes unnoticed.
    async with signals.subscribe(signal.SIGCHLD) as sigchld:

        def reap() -> None:
            reap_orphans()

        async def reaping() -> None:
            while True:
                await sigchld.get()
                reap()

        reaper = asyncio.ensure_future(reaping())
        try:
            yield
        finally:
            reaper.cancel()
            await asyncio.wait([reaper])
            try:
                await _sweep(me, SWEEP_GRACE, Confinement(confine=False), sigchld, reap, log, True)
            finally:
                set_spawn_workers(workers)
                if subreaper:
                    become_subreaper(False)

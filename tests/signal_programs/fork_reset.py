"""Child program of ``test_fork_resets_the_hub``: the hub state does not survive ``fork``.

    python fork_reset.py LOOP

With a user handler on SIGUSR2 and open subscriptions to SIGUSR2, SIGUSR1 and SIGCHLD,
forks. The forked child must find the user's handler back on SIGUSR2, SIG_DFL back on
SIGUSR1 and SIGCHLD, no hub, and its copies of the subscriptions closed; a SIGUSR2 it
sends itself runs the user's handler. The parent's subscription keeps working. Prints
"ok" on success.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from types import FrameType

from aioproc import _signals
from aioproc.signals import subscribe

calls: list[int] = []


def on_usr2(signum: int, frame: FrameType | None) -> None:
    calls.append(signum)


def child_checks(sub: _signals.Subscription) -> int:
    """Run in the forked child; returns its exit status."""
    failures = []
    if signal.getsignal(signal.SIGUSR2) is not on_usr2:
        failures.append(f"SIGUSR2 handler is {signal.getsignal(signal.SIGUSR2)!r}")
    if signal.getsignal(signal.SIGUSR1) != signal.SIG_DFL:
        failures.append(f"SIGUSR1 handler is {signal.getsignal(signal.SIGUSR1)!r}")
    if signal.getsignal(signal.SIGCHLD) != signal.SIG_DFL:
        failures.append(f"SIGCHLD handler is {signal.getsignal(signal.SIGCHLD)!r}")
    if _signals._hubs:
        failures.append(f"hubs left: {_signals._hubs!r}")
    if not sub.closed:
        failures.append("the subscription is still open in the child")
    os.kill(os.getpid(), signal.SIGUSR2)
    if calls != [signal.SIGUSR2]:
        failures.append(f"user handler calls: {calls!r}")
    for failure in failures:
        print("child:", failure, flush=True)
    return 1 if failures else 0


async def main() -> None:
    signal.signal(signal.SIGUSR2, on_usr2)
    async with subscribe(signal.SIGUSR2, signal.SIGUSR1) as sub, subscribe(signal.SIGCHLD) as chld:
        pid = os.fork()
        if pid == 0:
            os._exit(child_checks(sub))
        await chld.get()  # the child has exited: reaping it will not block
        reaped, status = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG never blocks
        if reaped != pid or os.waitstatus_to_exitcode(status) != 0:
            print("parent: child failed", flush=True)
            return
        os.kill(os.getpid(), signal.SIGUSR2)
        if await sub.get() != signal.SIGUSR2 or calls:
            print("parent: subscription broken after fork", flush=True)
            return
    if signal.getsignal(signal.SIGUSR2) is not on_usr2:
        print("parent: SIGUSR2 not restored", flush=True)
        return
    print("ok", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())

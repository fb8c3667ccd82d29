"""Child program of ``test_atomic_stop``: a port of Go's TestAtomicStop (golang/go#14571).

    python atomic_stop.py LOOP STYLE [SEED]

LOOP is ``asyncio`` or ``uvloop``. STYLE is ``run`` (``asyncio.run``/``uvloop.run``, whose
Runner installs its own SIGINT handler, so that is what the hub restores) or ``raw`` (a
loop driven by ``run_until_complete``, so ``signal.default_int_handler`` is restored and
a late SIGINT raises KeyboardInterrupt).

Ten times: subscribe to SIGINT, then close the subscription in one task while SIGINT is
sent to this process, either from this thread at a random point around the close, or
from a second thread that fires while the close runs. Each iteration must receive the
signal within a second, or the process must die by SIGINT (an unhandled
KeyboardInterrupt makes CPython re-raise SIGINT on itself, so the exit status is
-SIGINT). Anything else prints "lost signal".
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

from aioproc.signals import Subscription, subscribe

TRIES = 10


async def close_soon(sub: Subscription, yields: int, closing: threading.Event) -> None:
    """Set ``closing``, then close ``sub`` after ``yields`` trips through the loop."""
    closing.set()
    for _ in range(yields):
        await asyncio.sleep(0)
    await sub.aclose()


def send_during_close(ready: threading.Event, closing: threading.Event, spin: int) -> None:
    """Thread body: SIGINT this process ``spin`` steps after the closing task starts."""
    ready.set()
    closing.wait()
    for _ in range(spin):
        pass
    os.kill(os.getpid(), signal.SIGINT)


async def main(rng: random.Random) -> None:
    for i in range(TRIES):
        sub = subscribe(signal.SIGINT)
        closing = threading.Event()
        sender: threading.Thread | None = None
        if i % 2:
            # A second thread sends while the closing task takes 0-40 trips through the
            # loop and then closes: the signal lands before, during or after the close.
            ready = threading.Event()
            sender = threading.Thread(
                target=send_during_close, args=(ready, closing, rng.randrange(2000))
            )
            sender.start()
            ready.wait()
            closer = asyncio.create_task(close_soon(sub, rng.randrange(40), closing))
        else:
            closer = asyncio.create_task(close_soon(sub, rng.randrange(3), closing))
            for _ in range(rng.randrange(2)):
                await asyncio.sleep(0)
            os.kill(os.getpid(), signal.SIGINT)
        await closer
        if sender is not None:
            sender.join()
        # The close has returned and the signal has been sent. A signal that reached us
        # before or during the close is queued by now (the hub delivers synchronously;
        # no waiting needed). (Not asyncio.wait_for(sub.get()): on 3.11 it can swallow the
        # Runner's cancellation when get() fails at the same time.)
        try:
            sub.get_nowait()
        except anyio.ClosedResourceError:
            # Not queued: the restored disposition must act on it (KeyboardInterrupt, or
            # the Runner cancelling this task). Give it a second, like the Go test.
            await asyncio.sleep(1.0)
            # Report at once, like the Go test: a later iteration may well die by SIGINT.
            print("lost signal on iteration", i, flush=True)


def run(loop_name: str, style: str, make_main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    if loop_name == "uvloop":
        import uvloop

        new_loop = uvloop.new_event_loop
        runner = uvloop.run
    else:
        new_loop = asyncio.new_event_loop
        runner = asyncio.run
    if style == "run":
        runner(make_main())
    else:
        loop = new_loop()
        try:
            loop.run_until_complete(make_main())
        finally:
            loop.close()


if __name__ == "__main__":
    loop_name, style = sys.argv[1], sys.argv[2]
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else random.randrange(1 << 30)
    # SIGINT's disposition is what the hub restores: make it the usual one even when we
    # were started with SIGINT ignored (as background jobs of a shell are).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Switch threads often, so that the sender thread really runs during the close.
    sys.setswitchinterval(1e-6)
    rng = random.Random(seed)
    run(loop_name, style, lambda: main(rng))

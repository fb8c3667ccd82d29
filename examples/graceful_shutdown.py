"""A service that runs workers and, on SIGTERM or SIGINT, stops them all and exits 0.

Run with ``python examples/graceful_shutdown.py [WORKERS]`` and press Ctrl-C (or
``kill -TERM`` it). It prints ``READY`` and the workers' PIDs once every worker is
up, then waits for a signal.

* The signals come from :func:`aioproc.signals.subscribe`, an async iterator: no
  handler runs "somewhere else", and a signal that arrives while we are busy is
  queued, not lost.
* Each worker leads its own process group (``kill_group=True``): a Ctrl-C at the
  terminal reaches only this service, which then stops the workers itself, in
  order, and the workers' own children are stopped with them.
* ``Process.stop()`` sends ``stop_signal`` (SIGTERM), waits ``stop_timeout``, then
  sends SIGKILL, and reaps. The workers are stopped concurrently, so the whole
  shutdown takes at most one ``stop_timeout``.
* ``AsyncExitStack`` guarantees that every worker is stopped and reaped even if
  something fails on the way (an exception, a cancellation).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import aioproc
from aioproc import PIPE

# A worker: says it is ready once its SIGTERM handler is in place, then works
# until SIGTERM, on which it finishes its "current job" and exits 0.
WORKER = """
import signal, sys, time
n = sys.argv[1]
stopping = False
def on_term(signum, frame):
    global stopping
    stopping = True
signal.signal(signal.SIGTERM, on_term)
print(f"worker {n} ready", flush=True)
while not stopping:
    time.sleep(0.05)  # one unit of work
print(f"worker {n}: finished the current job, exiting", flush=True)
"""


async def main(count: int) -> int:
    async with (
        aioproc.signals.subscribe(signal.SIGTERM, signal.SIGINT) as signals,
        contextlib.AsyncExitStack() as stack,
    ):
        workers = []
        for n in range(count):
            proc = await stack.enter_async_context(
                aioproc.spawn(
                    [sys.executable, "-c", WORKER, str(n)],
                    stdout=PIPE,
                    kill_group=True,
                    stop_timeout=5,
                )
            )
            workers.append(proc)
        for proc in workers:
            assert proc.stdout is not None
            await proc.stdout.readline()  # "worker N ready"
        print("READY", " ".join(str(p.pid) for p in workers), flush=True)

        sig = await signals.get()
        print(f"got {sig.name}: stopping {len(workers)} workers", flush=True)
        statuses = await asyncio.gather(*(p.stop() for p in workers))
        for proc, status in zip(workers, statuses, strict=True):
            assert proc.stdout is not None
            last = (await proc.stdout.read()).decode().strip()
            print(f"  {last!r}; {status}", flush=True)
    print("all workers stopped and reaped; exiting 0", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)))

"""Run commands with a time limit: ``aioproc.run(..., timeout=...)``.

Run with ``python examples/run_with_timeout.py``.

* A command that finishes in time gives a ``CompletedProcess`` (its output, its
  ``ExitStatus``).
* A command that overruns is stopped (``stop_signal``, then SIGKILL after
  ``stop_timeout``) and *reaped* before ``aioproc.TimeoutExpired`` is raised; the
  exception carries the output captured so far and the child's status. It is also a
  ``TimeoutError`` and a ``subprocess.TimeoutExpired``, so existing handlers catch it.
* A child that ignores SIGTERM is killed once ``stop_timeout`` is up.
"""

from __future__ import annotations

import asyncio
import os
import time

import aioproc


def gone(pid: int) -> bool:
    """Whether ``pid`` has been reaped (a zombie still has a /proc entry)."""
    return not os.path.exists(f"/proc/{pid}")


async def main() -> None:
    result = await aioproc.run(["echo", "hello"], capture_output=True, text=True, timeout=5)
    print(f"in time: {result.stdout!r}, {result.status}")

    t0 = time.monotonic()
    try:
        await aioproc.run(
            ["sh", "-c", "echo partial; exec sleep 30"], capture_output=True, text=True, timeout=0.5
        )
    except aioproc.TimeoutExpired as exc:
        elapsed = time.monotonic() - t0
        print(f"timed out after {elapsed:.1f} s: output so far {exc.output!r}")
        if exc.status is not None:  # the status of the child that was stopped
            print(f"  {exc.status}; reaped: {gone(exc.status.pid)}")

    # This child ignores SIGTERM: after stop_timeout it gets SIGKILL.
    stubborn = "trap '' TERM; echo stubborn; while :; do sleep 0.05; done"
    try:
        await aioproc.run(
            ["sh", "-c", stubborn], capture_output=True, timeout=0.3, stop_timeout=0.3
        )
    except TimeoutError as exc:  # TimeoutExpired is a TimeoutError too
        if isinstance(exc, aioproc.TimeoutExpired) and exc.status is not None:
            print(f"stubborn child: {exc.status.signal!r}; reaped: {gone(exc.status.pid)}")
    print("done")


if __name__ == "__main__":
    asyncio.run(main())

"""Signal delivery latency: aioproc.signals beside a bare ``loop.add_signal_handler`` callback.

Measures, N times per row, the time from ``os.kill(os.getpid(), SIGUSR1)`` to the receiver
running (the same method as /work/shared/bench/sig_latency.py) and prints p50/p99 in
microseconds, plus the ratio of the aioproc p50 to the bare callback's on the same loop.

    .venv/bin/python benchmarks/signal_latency.py [N]
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aioproc.signals

N = 2000


def stats(xs: list[float]) -> tuple[float, float]:
    """p50 and p99 of ``xs`` (sorted in place), as the yardstick computes them."""
    xs.sort()
    return xs[len(xs) // 2], xs[int(len(xs) * 0.99) - 1]


async def bare(n: int) -> tuple[float, float]:
    """A bare ``loop.add_signal_handler`` callback resolving a future."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    lat: list[float] = []

    def handler() -> None:
        fut.set_result(time.perf_counter_ns())

    loop.add_signal_handler(signal.SIGUSR1, handler)
    try:
        for _ in range(n):
            fut = loop.create_future()
            t = time.perf_counter_ns()
            os.kill(os.getpid(), signal.SIGUSR1)
            lat.append((await fut - t) / 1e3)
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
    return stats(lat)


async def hub(n: int) -> tuple[float, float]:
    """``aioproc.signals.subscribe`` and ``await sub.get()``."""
    lat: list[float] = []
    async with aioproc.signals.subscribe(signal.SIGUSR1) as sub:
        for _ in range(n):
            t = time.perf_counter_ns()
            os.kill(os.getpid(), signal.SIGUSR1)
            await sub.get()
            lat.append((time.perf_counter_ns() - t) / 1e3)
    return stats(lat)


def run_on(loop: str, coro: Coroutine[Any, Any, tuple[float, float]]) -> tuple[float, float]:
    """Run ``coro`` on a fresh asyncio or uvloop loop."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(coro)  # type: ignore[no-any-return]
    return asyncio.run(coro)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=N, help=f"signals per row ({N})")
    n = parser.parse_args().n
    rows: list[tuple[str, str, Callable[[int], Coroutine[Any, Any, tuple[float, float]]]]] = [
        ("asyncio", "bare add_signal_handler callback", bare),
        ("asyncio", "aioproc subscribe + get()", hub),
        ("uvloop", "bare add_signal_handler callback", bare),
        ("uvloop", "aioproc subscribe + get()", hub),
    ]
    print(f"os.kill(getpid(), SIGUSR1) -> receiver running, N={n}")
    base: dict[str, float] = {}
    for loop, name, fn in rows:
        try:
            p50, p99 = run_on(loop, fn(n))
        except ImportError as exc:
            print(f"{loop:8} {name:34} skipped ({exc})")
            continue
        ratio = ""
        if fn is bare:
            base[loop] = p50
        elif loop in base:
            ratio = f"  ({p50 / base[loop]:.2f}x bare p50)"
        print(f"{loop:8} {name:34} p50 {p50:7.1f} us  p99 {p99:7.1f} us{ratio}")


if __name__ == "__main__":
    main()

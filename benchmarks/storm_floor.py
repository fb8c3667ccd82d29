"""The shared yardstick's storm harness with nothing spawned: its own loop stall.

``/work/shared/bench/peers.py`` measures ``storm_max_stall_ms`` by starting a
1 ms ticker and a ``gather`` of 1,000 tasks in one ``gather``; each task
spawns ``/bin/true`` and waits for it. This script runs exactly that harness
with tasks that spawn nothing (each awaits a future resolved by a timer, or
yields once), on the default loop and on uvloop, and prints the longest stall.
No spawning library can stall the loop less than this in that benchmark: the
1,000 tasks are created in one step and take their first steps in one loop
iteration, whatever they do.

    .venv/bin/python benchmarks/storm_floor.py            # 5 runs per loop and kind
    .venv/bin/python benchmarks/storm_floor.py --runs 1 --storm 100
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any


async def harness(storm: int, kind: str) -> float:
    """The yardstick's storm section, its tasks replaced by do-nothing ones; ms."""
    loop = asyncio.get_running_loop()
    stalls: list[float] = []
    done = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            stalls.append(now - last)
            last = now

    async def one() -> int:
        if kind == "yield":
            await asyncio.sleep(0)
            return 0
        fut: asyncio.Future[int] = loop.create_future()
        loop.call_later(0.01, fut.set_result, 0)
        return await fut

    async def storm_all() -> list[int]:
        nonlocal done
        try:
            return await asyncio.gather(*[one() for _ in range(storm)])
        finally:
            done = True

    await asyncio.gather(ticker(), storm_all())
    # A tick may come a hair early (the loop runs timers due within its clock
    # resolution): no stall is 0, not negative.
    return max(0.0, (max(stalls) - 0.001) * 1e3)


def run_on(loop_name: str, coro: Callable[[], Coroutine[Any, Any, float]]) -> float:
    if loop_name == "uvloop":
        import uvloop

        return float(uvloop.run(coro()))
    return asyncio.run(coro())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--storm", type=int, default=1000)
    args = parser.parse_args()
    print(f"{'loop':8} {'tasks':6} {'median ms':>10} {'min':>7} {'max':>7}")
    for loop_name in ("asyncio", "uvloop"):
        for kind in ("yield", "timer"):
            stalls = [
                run_on(loop_name, lambda k=kind: harness(args.storm, k)) for _ in range(args.runs)
            ]
            print(
                f"{loop_name:8} {kind:6} {statistics.median(stalls):10.2f} "
                f"{min(stalls):7.2f} {max(stalls):7.2f}"
            )


if __name__ == "__main__":
    main()

"""Run many jobs, at most a few at a time (bounded concurrency).

Run with ``python examples/fan_out.py [JOBS] [LIMIT]``.

Each job is a short command run with ``aioproc.run()``. An ``asyncio.Semaphore``
lets ``LIMIT`` of them run at once; ``asyncio.gather`` collects the results in job
order. Waiting for the children uses no thread at all, so a limit of hundreds is
fine too; the limit is there for the machine's sake (CPU, memory, open files).
If one job fails, the others go on; if the whole fan-out is cancelled, every
running ``run()`` stops and reaps its child before the cancellation goes on.

(With anyio the same shape is ``anyio.CapacityLimiter(LIMIT)`` and a task group.)
"""

from __future__ import annotations

import asyncio
import sys
import time

import aioproc

# Each job echoes its number, sleeps a little, and fails if the number is 7.
JOB = 'echo "job $1 in pid $$"; sleep 0.1; [ "$1" != 7 ]'


async def main(jobs: int, limit: int) -> None:
    semaphore = asyncio.Semaphore(limit)
    running = peak = 0

    async def job(n: int) -> aioproc.CompletedProcess[str]:
        nonlocal running, peak
        async with semaphore:
            running += 1
            peak = max(peak, running)
            try:
                return await aioproc.run(
                    ["sh", "-c", JOB, "sh", str(n)], capture_output=True, text=True, timeout=10
                )
            finally:
                running -= 1

    t0 = time.monotonic()
    results = await asyncio.gather(*(job(n) for n in range(jobs)))
    elapsed = time.monotonic() - t0
    for result in results:
        mark = "ok    " if result.returncode == 0 else "FAILED"
        print(f"{mark} {(result.stdout or '').strip()} -> exit {result.returncode}")
    failed = sum(r.returncode != 0 for r in results)
    print(f"{jobs} jobs, at most {peak} at once (limit {limit}), {failed} failed, "
          f"{elapsed:.1f} s")  # fmt: skip
    print("done")


if __name__ == "__main__":
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    asyncio.run(main(jobs, limit))

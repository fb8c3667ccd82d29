"""Shutdown scaling: how long a Supervisor takes to stop N services that exit promptly.

For each N, a fresh interpreter (this script re-run with ``--child N``) starts N
services (``sleep 600``: SIGTERM ends each at once), waits until every one is
running, then times ``Supervisor.aclose()``: from the stop request until every
process group is empty and every leader reaped. The curve should be linear in N;
before the fix it was quadratic (1,000 services: 10.9 s).

    .venv/bin/python benchmarks/shutdown.py                      # 250..2,000
    .venv/bin/python benchmarks/shutdown.py --sizes 500,2000 --rounds 3 --loop uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


async def _child(n: int) -> dict[str, float]:
    sys.path.insert(0, str(REPO))
    from aioproc.supervisor import Ready, Service, ServiceState, Supervisor

    services = [Service(f"s{i}", ["/bin/sleep", "600"], output="inherit") for i in range(n)]
    sup = Supervisor(services, shutdown_timeout=120)
    events = sup.events(maxsize=10 * n)
    t0 = time.perf_counter()
    await sup.__aenter__()
    ready = 0
    async for event in events:
        ready += isinstance(event, Ready)
        if ready == n:
            break
    await events.aclose()
    started = time.perf_counter() - t0
    t1 = time.perf_counter()
    await sup.aclose()
    stopped = time.perf_counter() - t1
    states = {s.state for s in sup.status().values()}
    assert states == {ServiceState.STOPPED}, states
    return {"n": n, "start_s": started, "shutdown_s": stopped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="250,500,1000,2000")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if args.loop == "uvloop":
            import uvloop

            result = uvloop.run(_child(args.child))
        else:
            result = asyncio.run(_child(args.child))
        print(json.dumps(result))
        return
    print(f"{'services':>8}  {'shutdown s (median)':>19}  {'min':>6}  {'max':>6}  {'start s':>7}")
    for n in (int(s) for s in args.sizes.split(",")):
        runs = []
        for _ in range(args.rounds):
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(n), "--loop", args.loop],
                capture_output=True, text=True, check=True, timeout=600,
            )  # fmt: skip
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        shut = [r["shutdown_s"] for r in runs]
        start = statistics.median(r["start_s"] for r in runs)
        print(
            f"{n:>8}  {statistics.median(shut):>19.2f}  {min(shut):>6.2f}  {max(shut):>6.2f}"
            f"  {start:>7.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()

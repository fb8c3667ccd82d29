"""Control endpoint round trip: ``status`` of a supervisor running 100 services.

A child process runs a :class:`Supervisor` of N ``sleep`` services (all running)
and serves its control socket with ``aioproc.control.serve``, on the default
asyncio loop, then on uvloop. This process, a separate client as ``aioproc ctl``
would be, times R ``status`` requests two ways, and prints p50/p99/max in ms:

* ``connect+status``: what one ``aioproc ctl status`` costs past its own start-up:
  connect, SO_PEERCRED check, request, the whole reply read and parsed;
* ``status (kept conn)``: the request and reply alone, on one connection.

The target (issue 16): a ``status`` round trip <= 5 ms with 100 services.

    .venv/bin/python benchmarks/control.py [N_SERVICES] [ROUNDS]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from aioproc.control import Client

SERVE = """
import asyncio, sys
from aioproc import control
from aioproc.supervisor import Service, Supervisor

async def main(path: str, n: int) -> None:
    services = [Service(f"svc{i:03d}", ["sleep", "3600"], output=lambda name, line: None)
                for i in range(n)]
    sup = Supervisor(services)
    async with control.serve(sup, path), sup:
        await asyncio.gather(*(sup.start(s.name) for s in services))
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

loop, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if loop == "uvloop":
    import uvloop
    uvloop.run(main(path, n))
else:
    asyncio.run(main(path, n))
"""


def stats(xs: list[float]) -> str:
    xs = sorted(xs)
    p50 = xs[len(xs) // 2]
    p99 = xs[max(0, int(len(xs) * 0.99) - 1)]
    return f"p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  max {xs[-1]:6.3f} ms"


def measure(loop: str, n: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ctl.sock")
        server = subprocess.Popen(
            [sys.executable, "-c", SERVE, loop, path, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            assert server.stdout.readline().strip() == "ready"
            fresh: list[float] = []
            kept: list[float] = []
            for _ in range(20):  # warm up
                with Client(path) as c:
                    c.request("status")
            for _ in range(rounds):
                t = time.perf_counter()
                with Client(path) as c:
                    reply = c.request("status")
                fresh.append((time.perf_counter() - t) * 1e3)
                assert len(reply["services"]) == n
                assert all(s["state"] == "running" for s in reply["services"])
            with Client(path) as c:
                for _ in range(rounds):
                    t = time.perf_counter()
                    c.request("status")
                    kept.append((time.perf_counter() - t) * 1e3)
            print(f"{loop:8} {n} services  connect+status      {stats(fresh)}", flush=True)
            print(f"{loop:8} {n} services  status (kept conn)  {stats(kept)}", flush=True)
        finally:
            assert server.stdin is not None
            server.stdin.close()  # the server leaves serve() and the supervisor
            server.wait(60)
            if server.stdout is not None:
                server.stdout.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    print(f"control socket status round trip, {n} services, {rounds} rounds")
    loops = ["asyncio"]
    try:
        import uvloop  # noqa: F401

        loops.append("uvloop")
    except ImportError:  # pragma: no cover
        pass
    for loop in loops:
        measure(loop, n, rounds)


if __name__ == "__main__":
    main()

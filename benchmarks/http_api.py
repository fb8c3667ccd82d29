"""HTTP face: API list and /metrics round trips with 100 services; idle CPU with the page open.

(Not ``http.py``: run as a script, that name would hide the standard library's ``http``.)

A child process runs a :class:`Supervisor` of N ``sleep`` services (all running)
and serves it with ``aioproc.http.serve`` on 127.0.0.1, on the default asyncio
loop, then on uvloop. This process, a separate client, times R requests on one
kept-alive connection (httpx) and prints p50/p99/max in ms:

* ``GET /api/v1/services``: every service's status, with CPU and RSS of its
  process group from one /proc scan, as JSON;
* ``GET /metrics``: the same as Prometheus text (prometheus_client).

Then it opens the status page in headless Chromium (/usr/bin/chromium through
playwright; without them, a client holding the page's event stream instead),
waits until it is live, and reads the supervisor's CPU time (utime + stime,
/proc/PID/stat) over IDLE seconds with nothing happening.

The target (issue 17): each round trip <= 10 ms with 100 services.

    .venv/bin/python benchmarks/http_api.py [N_SERVICES] [ROUNDS] [IDLE_SECONDS]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import httpx

SERVE = """
import asyncio, sys
from aioproc import http
from aioproc.supervisor import Service, Supervisor

async def main(n: int) -> None:
    services = [Service(f"svc{i:03d}", ["sleep", "3600"], output=lambda name, line: None)
                for i in range(n)]
    sup = Supervisor(services)
    async with http.serve(sup, "127.0.0.1", 0) as server, sup:
        await asyncio.gather(*(sup.start(s.name) for s in services))
        print(server.url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

loop, n = sys.argv[1], int(sys.argv[2])
if loop == "uvloop":
    import uvloop
    uvloop.run(main(n))
else:
    asyncio.run(main(n))
"""

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TICKS = os.sysconf("SC_CLK_TCK")


def stats(xs: list[float]) -> str:
    xs = sorted(xs)
    p50 = xs[len(xs) // 2]
    p99 = xs[max(0, int(len(xs) * 0.99) - 1)]
    return f"p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  max {xs[-1]:6.3f} ms"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def timed(client: httpx.Client, path: str, rounds: int) -> list[float]:
    for _ in range(20):  # warm up
        client.get(path).raise_for_status()
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        reply = client.get(path)
        _ = reply.content
        out.append((time.perf_counter() - t) * 1e3)
        reply.raise_for_status()
    return out


def idle_cpu(url: str, pid: int, seconds: float, n: int) -> tuple[str, float]:
    """CPU seconds the supervisor used over ``seconds`` with the page open and idle."""
    try:
        from playwright.sync_api import expect, sync_playwright

        have_browser = os.access(CHROMIUM, os.X_OK)
    except ImportError:  # pragma: no cover
        have_browser = False
    if have_browser:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page()
            page.goto(url)
            expect(page.locator("tr.svc")).to_have_count(n)
            expect(page.locator("#conn-text")).to_have_text("live")
            time.sleep(1)
            before = cpu_seconds(pid)
            time.sleep(seconds)
            used = cpu_seconds(pid) - before
            browser.close()
        return "page open in Chromium", used
    with (  # pragma: no cover
        httpx.Client(base_url=url, timeout=None) as client,
        client.stream("GET", "/api/v1/events") as reply,
    ):
        next(reply.iter_lines())
        before = cpu_seconds(pid)
        time.sleep(seconds)
        return "event stream held", cpu_seconds(pid) - before


def measure(loop: str, n: int, rounds: int, idle: float) -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE, loop, str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        assert url.startswith("http://"), url
        with httpx.Client(base_url=url, timeout=30) as client:
            listed: Any = client.get("/api/v1/services").json()
            assert len(listed["services"]) == n
            assert all(s["state"] == "running" for s in listed["services"])
            api = timed(client, "/api/v1/services", rounds)
            metrics = timed(client, "/metrics", rounds)
        print(f"{loop:8} {n} services  GET /api/v1/services  {stats(api)}", flush=True)
        print(f"{loop:8} {n} services  GET /metrics          {stats(metrics)}", flush=True)
        if idle > 0:
            how, used = idle_cpu(url, server.pid, idle, n)
            share = used / idle * 100
            print(
                f"{loop:8} {n} services  idle {idle:g} s, {how}: "
                f"{used * 1e3:.0f} ms CPU ({share:.2f} %)",
                flush=True,
            )
    finally:
        assert server.stdin is not None
        server.stdin.close()  # the server leaves serve() and the supervisor
        server.wait(60)
        if server.stdout is not None:
            server.stdout.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    idle = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    print(f"HTTP round trips, {n} services, {rounds} rounds; idle {idle:g} s")
    loops = ["asyncio"]
    try:
        import uvloop  # noqa: F401

        loops.append("uvloop")
    except ImportError:  # pragma: no cover
        pass
    for loop in loops:
        measure(loop, n, rounds, idle)


if __name__ == "__main__":
    main()

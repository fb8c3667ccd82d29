"""aioproc.supervisor in five seconds: backoff, readiness, dependency order, tree stop.

Run with ``python examples/supervisor_demo.py``. Three services:

* ``flaky`` crashes at once, every time: it is restarted with growing delays
  (capped exponential backoff) until it hits its start limit and becomes FATAL;
* ``db`` takes half a second before it listens on a TCP port (``ReadyTCP``); its
  output goes to a log file rotated by size (``LogFile``), which the demo moves
  away and has the supervisor reopen (``aioproc ctl reopen``), as logrotate would;
* ``api`` depends on ``db``: it starts only once ``db`` is ready. It forks a
  helper that ignores SIGTERM, to show that a stop takes the whole process group
  down (SIGTERM, ``stop_timeout``, then SIGKILL) and leaves nothing behind.

Every event is printed with the time it happened; the services' own lines come
with a clock timestamp (``Supervisor(timestamps="clock")``). While api runs, the demo serves
the supervisor's control socket (``aioproc.control.serve``) and runs
``aioproc ctl status`` against it, as an operator would from another terminal;
it also serves the HTTP face on 127.0.0.1 (``aioproc.http.serve``: the status
page, the JSON API, ``/metrics``), prints its URL and an excerpt of ``/metrics``.
``--hold SECONDS`` keeps everything running that long, to look at the page.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import sys
import tempfile
import time
import urllib.request

import aioproc
from aioproc import control, http
from aioproc.supervisor import (
    BackingOff,
    Backoff,
    Event,
    Exited,
    Fatal,
    LogFile,
    Ready,
    ReadyTCP,
    Service,
    ServiceState,
    Starting,
    StartLimit,
    Stopped,
    Stopping,
    Supervisor,
)

T0 = time.monotonic()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def show(event: Event) -> None:
    what = {
        Starting: lambda e: f"started (pid {e.pid}, attempt {e.attempt})",
        Ready: lambda e: "ready",
        Exited: lambda e: f"exited: {e.status}" + ("; will restart" if e.will_restart else ""),
        BackingOff: lambda e: f"backing off {e.delay:.2f} s",
        Fatal: lambda e: f"FATAL: {e.reason}",
        Stopping: lambda e: "stopping",
        Stopped: lambda e: "stopped",
    }[type(event)](event)
    print(f"  {event.time - T0:5.2f} s  {event.service:<6} {what}", flush=True)


def group_alive(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (a /proc scan)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(entry))
    return out


def describe_logs(path: str) -> str:
    """What the moved log holds, and whether the reopen made a new one."""
    with open(path + ".old") as f:
        old = f.read().strip()
    return f"db.log.old: {old!r}; a new db.log: {os.path.exists(path)}"


def metrics_excerpt(url: str) -> list[str]:
    """The per-service up/ready/restarts samples of ``/metrics`` (a blocking GET)."""
    with urllib.request.urlopen(url + "metrics", timeout=10) as reply:
        text: str = reply.read().decode()
    wanted = ("aioproc_service_up{", "aioproc_service_ready{", "aioproc_service_restarts_total{")
    return [line for line in text.splitlines() if line.startswith(wanted)]


async def main(hold: float) -> None:
    port = free_port()
    db_program = (
        "import socket, time; time.sleep(0.5); s = socket.socket(); "
        f"s.bind(('127.0.0.1', {port})); s.listen(); print('db: listening', flush=True); "
        "time.sleep(60)"
    )
    api_script = (
        "(trap '' TERM; exec sleep 60) & "  # a helper deaf to SIGTERM
        "echo 'api: serving, helper pid' $!; exec sleep 60"
    )
    tmp = tempfile.mkdtemp(prefix="aioproc-demo-")
    db_log = os.path.join(tmp, "db.log")
    services = [
        Service(
            "flaky",
            ["sh", "-c", "echo 'flaky: crashing'; exit 1"],
            backoff=Backoff(initial=0.2, factor=2.0, max=1.0),
            start_limit=StartLimit(burst=4, interval=30),
        ),
        Service(
            "db",
            [sys.executable, "-c", db_program],
            ready=ReadyTCP("127.0.0.1", port),
            output=LogFile(db_log, max_bytes=1_000_000, backups=2),  # rotated at 1 MB
        ),
        Service("api", ["sh", "-c", api_script], depends_on=["db"], stop_timeout=0.5),
    ]
    print("starting flaky, db and api (api depends on db)\n")
    flaky_gave_up, api_ready = asyncio.Event(), asyncio.Event()
    sock = os.path.join(tmp, "demo.sock")
    sup = Supervisor(services, timestamps="clock")  # service lines: "HH:MM:SS name | line"
    async with control.serve(sup, sock), http.serve(sup, "127.0.0.1", 0) as web, sup:
        events = sup.events()  # from now until the supervisor has shut down

        async def watch() -> None:
            async for event in events:
                show(event)
                if isinstance(event, Fatal) and event.service == "flaky":
                    flaky_gave_up.set()
                if isinstance(event, Ready) and event.service == "api":
                    api_ready.set()

        watcher = asyncio.ensure_future(watch())
        await flaky_gave_up.wait()
        await api_ready.wait()
        assert sup.status()["flaky"].state is ServiceState.FATAL
        api_pid = sup.status()["api"].pid
        assert api_pid is not None
        print(f"\napi's process group: {sorted(group_alive(api_pid))}")
        print(f"\n$ aioproc ctl --control {sock} status")
        ctl = await aioproc.run(
            [sys.executable, "-m", "aioproc", "ctl", "--control", sock, "status"],
            stdout=aioproc.PIPE,
        )
        print(ctl.stdout.decode(), end="")
        print(f"(exit code {ctl.returncode}; 3: some service is not where it should be)\n")
        # As logrotate's postrotate would: move db's log away, have the supervisor reopen it.
        os.rename(db_log, db_log + ".old")
        print(f"$ mv db.log db.log.old; aioproc ctl --control {sock} reopen")
        ctl = await aioproc.run(
            [sys.executable, "-m", "aioproc", "ctl", "--control", sock, "reopen"],
            stdout=aioproc.PIPE,
        )
        print(ctl.stdout.decode(), end="")
        print(describe_logs(db_log) + "\n")
        print(f"status page: {web.url}  (JSON: {web.url}api/v1/services)")
        print(f"$ curl -s {web.url}metrics | grep -E 'service_(up|ready|restarts_total)'")
        for line in await asyncio.to_thread(metrics_excerpt, web.url):
            print(line)
        print()
        if hold > 0:
            print(f"holding for {hold:g} s: open {web.url} in a browser (Ctrl-C to stop)\n")
            await asyncio.sleep(hold)
        print("leaving the supervisor: stopping api, then db (reverse dependency order)\n")
    await watcher
    shutil.rmtree(tmp)  # db's logs (serve() removed the socket itself)
    left = group_alive(api_pid)
    print(f"\nprocesses left in api's group: {left or 'none'}")
    print(f"done in {time.monotonic() - T0:.1f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="aioproc.supervisor in five seconds")
    parser.add_argument(
        "--hold", type=float, default=0.0, metavar="SECONDS", help="keep serving that long"
    )
    try:
        asyncio.run(main(parser.parse_args().hold))
    except KeyboardInterrupt:
        pass

"""aioproc in an aiohttp application.

Run with ``python examples/aiohttp_app.py --port 8000 [--loop uvloop|asyncio]`` and try::

    curl -X POST 'localhost:8000/run?seconds=0.1'   # {"returncode": 0, "stdout": ...}
    curl -X POST 'localhost:8000/run?seconds=9'     # 504: timed out, child already reaped
    curl -N localhost:8000/stream                   # a line at a time; Ctrl-C stops the child
    curl localhost:8000/status                      # the supervisor's services

The four parts (see ``docs/integrations.md``):

1. A ``cleanup_ctx`` enters a :class:`~aioproc.supervisor.Supervisor` running a
   ``worker`` service (restarted if it dies) and leaves it at cleanup, which stops
   the worker's whole process group.
2. ``POST /run`` runs a command with ``aioproc.run(..., timeout=...)``; on a timeout
   the child (its process group, with ``kill_group=True``) has been stopped and
   reaped before ``TimeoutExpired`` reaches us: 504.
3. ``GET /stream`` sends a long-running child's output as a chunked
   ``StreamResponse``, a line at a time; the first line is ``pid <PID>`` of that
   child. aiohttp does not cancel a handler whose client went away (unless
   ``handler_cancellation=True``): the next ``write()`` raises
   ``ConnectionResetError``, which leaves ``async with aioproc.spawn(...)`` and so
   stops and reaps the child. We catch it afterwards, so that a client going away
   is not logged as a server error.
4. ``GET /status`` reports the supervisor's services as JSON.

Shutdown: ``web.run_app`` handles SIGTERM and SIGINT (graceful shutdown; handlers
still running after ``shutdown_timeout`` are cancelled, which stops their
children), runs the cleanup contexts, and returns: the program exits 0.

``--loop uvloop`` hands ``run_app`` a loop from ``uvloop.new_event_loop()``: no
event loop policy is set, so nothing is deprecated on any Python version
(``uvloop.install()`` warns from Python 3.12 on, and loop policies are deprecated
from 3.14).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import deque
from collections.abc import AsyncIterator

from aiohttp import web

import aioproc
from aioproc.supervisor import Service, Supervisor

# The supervised worker: a small loop that reports a heartbeat every half second.
WORKER = "import time\nn = 0\nwhile True:\n    n += 1; print('heartbeat', n); time.sleep(0.5)\n"
# The streamed command: numbered lines, ten a second, for a minute.
TICKER = "import time\nfor n in range(600):\n    print('line', n, flush=True); time.sleep(0.1)\n"

SUPERVISOR = web.AppKey("supervisor", Supervisor)
RECENT = web.AppKey("recent", deque)  # the worker's last lines, for /status


async def supervisor_ctx(app: web.Application) -> AsyncIterator[None]:
    """Run the supervisor for as long as the application runs."""
    recent: deque[str] = deque(maxlen=5)
    services = [
        Service(
            "worker",
            [sys.executable, "-c", WORKER],
            restart="always",
            stop_timeout=5,
            output=lambda name, line: recent.append(line),
        )
    ]
    async with Supervisor(services, shutdown_timeout=10) as supervisor:
        app[SUPERVISOR] = supervisor
        app[RECENT] = recent
        yield  # the application runs here; cleanup stops every service


async def run_command(request: web.Request) -> web.Response:
    """Run a command that takes ``seconds``, allowing it ``timeout`` seconds."""
    seconds = float(request.query.get("seconds", "0.1"))
    timeout = float(request.query.get("timeout", "2"))
    argv = ["sh", "-c", 'echo "started"; sleep "$1"; echo "finished"', "sh", str(seconds)]
    try:
        # kill_group=True: a timeout stops the shell's children (the sleep) too.
        result = await aioproc.run(
            argv, capture_output=True, text=True, timeout=timeout, kill_group=True
        )
    except aioproc.TimeoutExpired:
        # The child has already been stopped and reaped.
        raise web.HTTPGatewayTimeout(text=f"the command timed out after {timeout:g} s") from None
    return web.json_response({"returncode": result.returncode, "stdout": result.stdout})


async def stream(request: web.Request) -> web.StreamResponse:
    """Stream a long-running command's output; a disconnect stops the command."""
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    try:
        async with aioproc.spawn([sys.executable, "-c", TICKER], stdout=aioproc.PIPE) as proc:
            assert proc.stdout is not None
            await response.write(f"pid {proc.pid}\n".encode())
            async for line in proc.stdout:
                await response.write(line)  # raises once the client has gone away
    except ConnectionResetError:
        return response  # the client went away; the child has been stopped and reaped
    await response.write_eof()
    return response


async def status(request: web.Request) -> web.Response:
    """The supervisor's services: state, PID, restarts, and the worker's last line."""
    supervisor = request.app[SUPERVISOR]
    recent = request.app[RECENT]
    return web.json_response(
        {
            name: {
                "state": s.state.value,
                "pid": s.pid,
                "restarts": s.restarts,
                "last_line": recent[-1] if recent and name == "worker" else None,
            }
            for name, s in supervisor.status().items()
        }
    )


def make_app() -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(supervisor_ctx)
    app.add_routes(
        [web.post("/run", run_command), web.get("/stream", stream), web.get("/status", status)]
    )
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    loop: asyncio.AbstractEventLoop | None = None
    if args.loop == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    web.run_app(make_app(), host="127.0.0.1", port=args.port, loop=loop, shutdown_timeout=5)


if __name__ == "__main__":
    main()

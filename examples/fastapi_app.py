"""aioproc in a FastAPI application (served by uvicorn).

Run with ``python examples/fastapi_app.py --port 8000 [--loop uvloop|asyncio]`` and try::

    curl -X POST 'localhost:8000/run?seconds=0.1'   # {"returncode": 0, "stdout": ...}
    curl -X POST 'localhost:8000/run?seconds=9'     # 504: timed out, child already reaped
    curl -N localhost:8000/stream                   # a line at a time; Ctrl-C stops the child
    curl localhost:8000/status                      # the supervisor's services

The four parts (see ``docs/integrations.md``):

1. The ``lifespan`` enters a :class:`~aioproc.supervisor.Supervisor` running a
   ``worker`` service (restarted if it dies) and leaves it at shutdown, which stops
   the worker's whole process group.
2. ``POST /run`` runs a command with ``aioproc.run(..., timeout=...)``; on a timeout
   the child (with ``kill_group=True``, its whole process group) has been stopped and
   reaped before ``TimeoutExpired`` reaches us: 504.
3. ``GET /stream`` sends a long-running child's output line by line. The first
   line is ``pid <PID>`` of that child. When the client disconnects, Starlette
   cancels the response, the cancellation ends the generator inside
   ``async with aioproc.spawn(...)``, and leaving that block stops and reaps the
   child.
4. ``GET /status`` reports the supervisor's services as JSON.

Shutdown: uvicorn handles SIGTERM/SIGINT itself (graceful shutdown, then the
lifespan's exit). Requests still streaming after ``timeout_graceful_shutdown``
are cancelled, which stops their children too. uvicorn then re-raises the signal
it caught against the handler that was there before it started; ours turns it
into a clean exit (status 0) rather than death by SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse

import aioproc
from aioproc.supervisor import Service, Supervisor

# The supervised worker: a small loop that reports a heartbeat every half second.
WORKER = "import time\nn = 0\nwhile True:\n    n += 1; print('heartbeat', n); time.sleep(0.5)\n"
# The streamed command: numbered lines, ten a second, for a minute.
TICKER = "import time\nfor n in range(600):\n    print('line', n, flush=True); time.sleep(0.1)\n"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Run the supervisor for as long as the application runs."""
    recent: deque[str] = deque(maxlen=5)  # the worker's last lines, for /status
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
        app.state.supervisor = supervisor
        app.state.recent = recent
        yield
    # Leaving the block stopped every service (stop signal, grace period, SIGKILL).


app = FastAPI(lifespan=lifespan)


@app.post("/run")
async def run_command(seconds: float = 0.1, timeout: float = 2.0) -> dict[str, Any]:
    """Run a command that takes ``seconds``, allowing it ``timeout`` seconds."""
    argv = ["sh", "-c", 'echo "started"; sleep "$1"; echo "finished"', "sh", str(seconds)]
    try:
        # kill_group=True: a timeout stops the shell's children (the sleep) too.
        result = await aioproc.run(
            argv, capture_output=True, text=True, timeout=timeout, kill_group=True
        )
    except aioproc.TimeoutExpired as exc:
        # The child has already been stopped and reaped.
        raise HTTPException(504, f"the command timed out after {timeout:g} s") from exc
    return {"returncode": result.returncode, "stdout": result.stdout}


@app.get("/stream")
async def stream() -> StreamingResponse:
    """Stream a long-running command's output; a disconnect stops the command."""

    async def lines() -> AsyncIterator[bytes]:
        async with aioproc.spawn([sys.executable, "-c", TICKER], stdout=aioproc.PIPE) as proc:
            assert proc.stdout is not None
            yield f"pid {proc.pid}\n".encode()
            async for line in proc.stdout:
                yield line
        # A client that disconnects ends this generator with an exception (a
        # cancellation); leaving the async with stops and reaps the child.

    return StreamingResponse(lines(), media_type="text/plain")


@app.get("/status")
async def status(request: Request) -> dict[str, Any]:
    """The supervisor's services: state, PID, restarts, and the worker's last line."""
    supervisor: Supervisor = request.app.state.supervisor
    recent: deque[str] = request.app.state.recent
    return {
        name: {
            "state": s.state.value,
            "pid": s.pid,
            "restarts": s.restarts,
            "last_line": recent[-1] if recent and name == "worker" else None,
        }
        for name, s in supervisor.status().items()
    }


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    # uvicorn re-raises the signal it shut down for once it is done; exit 0 then.
    raise SystemExit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop=args.loop, timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()

"""aioproc in one minute: spawn, stream, signal and stop real processes.

Run with ``make demo``. Every step prints what it did and what it saw.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time

import aioproc
from aioproc import PIPE


def running(pid: int) -> bool:
    """Whether ``pid`` is alive (a zombie waiting for its new parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(None))
    try:
        await asyncio.wait_for(done, 5)
    finally:
        loop.remove_reader(fd)


def say(msg: str) -> None:
    print(f"  {msg}", flush=True)


async def main() -> None:
    print(f"aioproc {aioproc.__version__} on {sys.implementation.name} {sys.version.split()[0]}")
    print(f"waiting mode: {aioproc.get_wait_mode()} (no thread per child)\n")

    print("1. run a command and capture its output")
    result = await aioproc.run(["uname", "-sr"], capture_output=True, text=True, check=True)
    say(f"uname said {result.stdout.strip()!r}; {result.status}")

    print("\n2. stream a child's output line by line as it is produced")
    script = "for i in 1 2 3; do echo tick $i; sleep 0.1; done"
    async with aioproc.spawn(["sh", "-c", script], stdout=PIPE) as proc:
        assert proc.stdout is not None
        async for line in proc.stdout:
            say(f"{time.strftime('%H:%M:%S')} child {proc.pid}: {line.decode().strip()}")
        say(str(await proc.wait()))

    print("\n3. 200 children at once, waited for with no extra thread")
    threads = threading.active_count()
    procs = [await aioproc.spawn(["sleep", "0.5"]) for _ in range(200)]
    say(f"200 children running; threads in this process: {threading.active_count()} "
        f"(was {threads})")  # fmt: skip
    statuses = await asyncio.gather(*(p.wait() for p in procs))
    say(f"all exited: {sum(s.success for s in statuses)} with code 0")

    print("\n4. wait() returns when the child exits, even if a grandchild keeps its pipe open")
    proc = await aioproc.spawn(["sh", "-c", "sleep 3 & echo started"], stdout=PIPE)
    t0 = time.monotonic()
    status = await proc.wait()
    say(f"{status} after {time.monotonic() - t0:.3f} s (the grandchild still holds stdout)")
    try:
        proc.kill()
    except ProcessLookupError as exc:
        say(f"kill() after exit raises ProcessLookupError: {exc}")
    await proc.aclose()

    print("\n5. a graceful stop: SIGTERM, a grace period, then SIGKILL for a stubborn child")
    stubborn = "trap 'echo got TERM, ignoring it' TERM; echo ready; while :; do sleep 0.05; done"
    proc = await aioproc.spawn(["sh", "-c", stubborn], stdout=PIPE, stop_timeout=0.5)
    assert proc.stdout is not None
    say(f"child says {(await proc.stdout.readline()).decode().strip()!r}")
    status = await proc.stop()
    say(f"child said {(await proc.stdout.readline()).decode().strip()!r}")
    say(f"stop() -> {status}")
    await proc.aclose()

    print("\n6. a timeout stops and reaps the child, keeping the output so far")
    try:
        await aioproc.run(["sh", "-c", "echo partial; sleep 10"], capture_output=True, timeout=0.3)
    except aioproc.TimeoutExpired as exc:
        say(f"{exc}; output so far {exc.output!r}; {exc.status}")

    print("\n7. a whole process group is stopped, grandchildren included")
    tree = "sleep 30 & sleep 30 & echo $!; wait"
    proc = await aioproc.spawn(["sh", "-c", tree], stdout=PIPE, kill_group=True)
    assert proc.stdout is not None
    grandchild = int(await proc.stdout.readline())
    watch = os.pidfd_open(grandchild)  # readable once the grandchild has exited
    status = await proc.stop()
    await readable(watch)  # SIGKILL is delivered asynchronously: wait for the exit
    os.close(watch)
    say(f"{status}; grandchild {grandchild} still running: {running(grandchild)}")
    await proc.aclose()

    print("\n8. signals to the child go through its pidfd, so a recycled PID is never hit")
    proc = await aioproc.spawn(["sleep", "30"])
    proc.send_signal(signal.SIGUSR1)
    say(f"{await proc.wait()} (mode={proc.mode})")
    print("\ndone: no child, zombie or thread left behind.")


if __name__ == "__main__":
    asyncio.run(main())

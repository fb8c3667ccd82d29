"""Every program in examples/ runs and does what its docstring says, so none can rot.

* The short scripts are run to completion (``-W error``): exit 0, the expected
  output, nothing that looks like a warning on stderr.
* ``graceful_shutdown.py`` is sent SIGTERM or SIGINT once its workers are up.
* The server examples (FastAPI + uvicorn, aiohttp) are started for real on a free
  port, on the default loop and on uvloop, and talked to over HTTP with httpx:
  run with and without a timeout, read part of the stream and hang up (the
  streaming child must be stopped and reaped), read the status, then SIGTERM.

"Nothing is left behind" is checked two ways: every child and grandchild of the
program seen while it ran must have exited by the time it has (pidfds opened
while they ran, so a recycled PID cannot fool us), and this process is made a
*child subreaper* for the duration of the test, so anything the program left
behind (alive, or a zombie nobody reaped) would be reparented to us, and seen.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .helpers import children_of, open_pidfds, process_state, wait_gone

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

_PR_SET_CHILD_SUBREAPER = 36


def _importable(*names: str) -> bool:
    return all(importlib.util.find_spec(name) is not None for name in names)


def _no_warnings(stderr: str) -> None:
    for word in ("Warning", "Traceback", "Exception ignored", "ERROR"):
        assert word not in stderr, f"{word!r} on stderr:\n{stderr}"


def _run(name: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    _no_warnings(result.stderr)
    return result


def _wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` (bounded); for states that no event announces (a reap)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class Subreaper:
    """This process as a child subreaper: what a program leaves behind comes to us.

    A process whose parent dies is reparented to its nearest subreaper ancestor.
    Grandchildren that die with their parent (a shell killed with its process
    group, say) are reparented to us as zombies while the program runs: that is
    the kernel's doing, not a leak, and :meth:`reap_orphans` collects them. What
    matters is what is reparented when the program itself exits: nothing may be.
    """

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        if self._libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            pytest.skip(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
        self.before = children_of()

    def reap_orphans(self, *ours: int) -> list[str]:
        """Reap the dead orphans reparented to us so far; fail if one is alive."""
        orphans = children_of() - self.before - set(ours)
        described = [_describe(pid) for pid in orphans]
        alive = [d for pid, d in zip(orphans, described, strict=True) if process_state(pid) != "Z"]
        for pid in orphans:
            if process_state(pid) == "Z":
                os.waitpid(pid, 0)
        assert not alive, f"orphans still running: {alive}"
        return described

    def assert_nothing_left(self, seen: set[int]) -> None:
        left = children_of() - self.before
        assert not left, (
            "left behind (reparented to us): "
            + ", ".join(map(_describe, left))
            + f"; descendants seen while it ran: {sorted(seen)}"
        )

    def close(self) -> None:
        """Stop being a subreaper; kill and reap whatever came to us (after a failure)."""
        self._libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        for pid in children_of() - self.before:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


@pytest.fixture
def subreaper() -> Iterator[Subreaper]:
    reaper = Subreaper()
    try:
        yield reaper
    finally:
        reaper.close()


def _describe(pid: int) -> str:
    """``pid (state name)``: the name from /proc/PID/stat, which a zombie keeps."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            name = f.read().split("(", 1)[1].rsplit(")", 1)[0]
    except (OSError, IndexError):
        name = "?"
    return f"{pid} ({process_state(pid)} {name})"


class Program:
    """An example program running in the background, its output read by threads."""

    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-W", "error", *argv],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []  # stdout and stderr, as they come
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(stream, is_err), daemon=True)
            for stream, is_err in ((self.proc.stdout, False), (self.proc.stderr, True))
        ]
        for reader in self._readers:
            reader.start()
        self.seen: set[int] = set()  # descendants seen while it ran
        self._pidfds: list[int] = []

    def _read(self, stream: object, is_err: bool) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._changed:
                self.lines.append(line)
                if is_err:
                    self.stderr.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float = 30) -> str:
        """The first output line that satisfies ``predicate`` (waits for it)."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: any(map(predicate, self.lines)) or self.proc.poll() is not None,
                timeout,
            )
            match = next((line for line in self.lines if predicate(line)), None)
        assert found, f"not seen; output so far:\n{''.join(self.lines)}"
        assert match is not None, f"not seen; output so far:\n{''.join(self.lines)}"
        return match

    def record_descendants(self) -> set[int]:
        """Note the children and grandchildren now (pidfds, so PID reuse cannot fool us)."""
        now = set()
        for child in children_of(self.proc.pid):
            now |= {child} | children_of(child)
        new = now - self.seen
        self._pidfds += open_pidfds(new)
        self.seen |= new
        return now

    def finish(self, sig: signal.Signals, timeout: float = 30) -> str:
        """Send ``sig``, expect exit 0, and everything it started to be gone; the output."""
        self.record_descendants()
        self.proc.send_signal(sig)
        returncode = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(10)
        output = "".join(self.lines)
        assert returncode == 0, f"exit {returncode}\n{output}"
        pidfds, self._pidfds = self._pidfds, []
        assert wait_gone(pidfds, timeout=0.5), f"descendants still running: {self.seen}"
        _no_warnings("".join(self.stderr))
        return output

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for fd in self._pidfds:
            os.close(fd)
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        for reader in self._readers:
            reader.join(10)
        self.proc.stdout.close()
        self.proc.stderr.close()


# --------------------------------------------------------------- the short scripts


def test_demo() -> None:
    result = _run("demo.py", timeout=60)
    assert result.stdout.strip().splitlines()[-1].startswith("done")


def test_run_with_timeout() -> None:
    out = _run("run_with_timeout.py").stdout
    assert "in time: 'hello\\n'" in out
    assert "output so far 'partial\\n'" in out
    assert "killed by SIGTERM; reaped: True" in out
    assert "stubborn child: <Signals.SIGKILL: 9>; reaped: True" in out
    assert out.splitlines()[-1] == "done"


def test_pipe_two() -> None:
    out = _run("pipe_two.py").stdout.splitlines()
    assert out == [
        "handed:    ['apple', 'banana', 'cherry']",
        "os.pipe(): ['apple', 'banana', 'cherry']",
        "copying:   ['apple', 'banana', 'cherry']",
        "done",
    ]


def test_fan_out() -> None:
    out = _run("fan_out.py", "10", "3").stdout.splitlines()
    jobs = out[:10]
    assert [line.split()[2] for line in jobs] == [str(n) for n in range(10)]  # in job order
    assert [line.split()[0] for line in jobs] == ["ok"] * 7 + ["FAILED"] + ["ok"] * 2
    assert out[10].startswith("10 jobs, at most 3 at once (limit 3), 1 failed")
    assert out[-1] == "done"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_graceful_shutdown(sig: signal.Signals, subreaper: Subreaper) -> None:
    program = Program(str(EXAMPLES / "graceful_shutdown.py"), "3")
    try:
        ready = program.wait_for_line(lambda line: line.startswith("READY"))
        workers = {int(pid) for pid in ready.split()[1:]}
        assert len(workers) == 3
        assert program.record_descendants() == workers
        out = program.finish(sig)
    finally:
        program.close()
    assert f"got {sig.name}: stopping 3 workers" in out
    assert out.count("finished the current job, exiting'; process") == 3
    assert out.count("exited with code 0") == 3
    assert out.splitlines()[-1] == "all workers stopped and reaped; exiting 0"
    subreaper.assert_nothing_left(program.seen)


# ----------------------------------------------------------------- the web servers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


_SERVERS = [
    pytest.param(
        "fastapi_app.py",
        loop,
        marks=pytest.mark.skipif(
            not _importable("fastapi", "uvicorn", "httpx"),
            reason="needs fastapi, uvicorn and httpx: pip install -e '.[examples]'",
        ),
        id=f"fastapi-{loop}",
    )
    for loop in ("asyncio", "uvloop")
] + [
    pytest.param(
        "aiohttp_app.py",
        loop,
        marks=pytest.mark.skipif(
            not _importable("aiohttp", "httpx"),
            reason="needs aiohttp and httpx: pip install -e '.[examples]'",
        ),
        id=f"aiohttp-{loop}",
    )
    for loop in ("asyncio", "uvloop")
]


def _gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


@pytest.mark.parametrize(("script", "loop"), _SERVERS)
def test_server(script: str, loop: str, subreaper: Subreaper) -> None:
    import httpx

    port = _free_port()
    server = Program(str(EXAMPLES / script), "--port", str(port), "--loop", loop)
    try:
        # uvicorn logs "Uvicorn running on http://...", aiohttp prints "Running on http://...".
        server.wait_for_line(lambda line: f"running on http://127.0.0.1:{port}" in line.lower())
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            status = client.get("/status").json()
            assert status["worker"]["state"] == "running"
            assert status["worker"]["restarts"] == 0
            worker = status["worker"]["pid"]
            assert server.record_descendants() == {worker}

            ran = client.post("/run", params={"seconds": 0.05})
            assert ran.status_code == 200
            assert ran.json() == {"returncode": 0, "stdout": "started\nfinished\n"}

            timed_out = client.post("/run", params={"seconds": 30, "timeout": 0.3})
            assert timed_out.status_code == 504
            assert "timed out after 0.3 s" in timed_out.text

            with client.stream("GET", "/stream") as response:
                assert response.status_code == 200
                lines = response.iter_lines()
                first = next(lines)
                assert first.startswith("pid ")
                streamer = int(first.split()[1])
                [pidfd] = open_pidfds({streamer})
                assert streamer in server.record_descendants()
                assert [next(lines) for _ in range(3)] == ["line 0", "line 1", "line 2"]
            # Closing a response in the middle of its body closes the connection: the
            # server sees the client go away, and must stop the child and reap it.
            assert wait_gone([pidfd], timeout=10), "the streaming child is still running"
            assert _wait_until(lambda: _gone(streamer)), "the streaming child was not reaped"
            assert _wait_until(lambda: children_of(server.proc.pid) == {worker}), (
                f"children left: {children_of(server.proc.pid)}"
            )
            # The server still serves after all that.
            assert client.get("/status").json()["worker"]["pid"] == worker

        # The shell of the timed-out /run died with its sleep (kill_group=True); the
        # sleep's zombie came to us. Anything else must be the server's to reap.
        orphans = subreaper.reap_orphans(server.proc.pid)
        assert all(o.endswith("(Z sleep)") for o in orphans), orphans
        server.finish(signal.SIGTERM)
    finally:
        server.close()
    subreaper.assert_nothing_left(server.seen)

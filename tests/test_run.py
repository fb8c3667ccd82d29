"""Tests for aioproc._run: ``run()`` with capture, input, check, text mode, timeout, cancellation.

Every async test runs on the default asyncio loop and on uvloop (see conftest.py);
the timeout and cancellation tests also run in both wait modes (``wait_mode``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import aioproc
from aioproc import DEVNULL, PIPE, STDOUT, ProcessReader

from .helpers import TIMER_SLACK, cancel_as_it_finishes, children_of, open_fds, process_state

# no_leaks (conftest.py): after each test, no child or zombie, descriptor or thread is left.
pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(30)]

PY = sys.executable
TIMEOUT = 10.0  # generous: only reached when something hangs
MiB = 1024 * 1024


# ----------------------------------------------------------------- helpers
def assert_gone(pid: int) -> None:
    """The child has been reaped: no such process, not even a zombie."""
    assert pid not in children_of()
    assert process_state(pid) is None, f"process {pid} still exists ({process_state(pid)})"


@contextlib.contextmanager
def report_pipe() -> Iterator[tuple[int, ProcessReader]]:
    """A pipe a child writes reports to (its pid, "got TERM"), which the test reads.

    Lets the test follow a child that run() owns, while run() is still running.
    """
    r, w = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(r, False)
    reader = ProcessReader(r, asyncio.get_running_loop())
    try:
        yield w, reader
    finally:
        reader.close()
        os.close(w)


async def read_pid(report: ProcessReader) -> int:
    line = await asyncio.wait_for(report.readline(), TIMEOUT)
    return int(line)


# A child that reports its pid on stderr (fd 2), then says "term" on each
# SIGTERM and goes on running: it must be stopped with SIGKILL.
TERM_REPORTER = """
import os, signal, time
signal.signal(signal.SIGTERM, lambda *_: os.write(2, b"term\\n"))
os.write(2, b"%d\\n" % os.getpid())
while True:
    time.sleep(10)
"""


# ================================================================= basics
async def test_capture_output() -> None:
    argv = ["sh", "-c", "echo out; echo err >&2; exit 3"]
    result = await aioproc.run(argv, capture_output=True)
    assert result.args == argv
    assert result.stdout == b"out\n"
    assert result.stderr == b"err\n"
    assert result.returncode == 3
    assert result.status.exit_code == 3
    assert not result.status.success
    with pytest.raises(aioproc.ProcessError):
        result.check_returncode()


async def test_no_capture_gives_none() -> None:
    result = await aioproc.run(["true"])
    assert result.stdout is None
    assert result.stderr is None
    assert result.returncode == 0
    result.check_returncode()


async def test_stdout_pipe_alone() -> None:
    result = await aioproc.run(["sh", "-c", "echo out; echo err >&2"], stdout=PIPE, stderr=DEVNULL)
    assert result.stdout == b"out\n"
    assert result.stderr is None


async def test_stderr_to_stdout() -> None:
    result = await aioproc.run(["sh", "-c", "echo a; echo b >&2"], stdout=PIPE, stderr=STDOUT)
    assert result.stdout == b"a\nb\n"
    assert result.stderr is None


async def test_shell_string() -> None:
    result = await aioproc.run("echo $((6 * 7))", shell=True, capture_output=True)
    assert result.stdout == b"42\n"


async def test_input_bytes() -> None:
    result = await aioproc.run(["cat"], input=b"some\x00bytes", capture_output=True)
    assert result.stdout == b"some\x00bytes"


async def test_empty_input_gives_eof() -> None:
    result = await aioproc.run(["sh", "-c", "cat; echo end"], input=b"", capture_output=True)
    assert result.stdout == b"end\n"


async def test_input_str_with_text() -> None:
    result = await aioproc.run(["cat"], input="héllo\n", capture_output=True, text=True)
    assert result.stdout == "héllo\n"
    assert result.stderr == ""


async def test_input_str_needs_text() -> None:
    with pytest.raises(TypeError, match="text=True"):
        await aioproc.run(["cat"], input="text")


async def test_encoding_and_errors_imply_text() -> None:
    latin = await aioproc.run(["printf", "caf\\351"], capture_output=True, encoding="latin-1")
    assert latin.stdout == "café"
    replaced = await aioproc.run(["printf", "a\\377b"], capture_output=True, errors="replace")
    assert replaced.stdout == "a\ufffdb"
    with pytest.raises(UnicodeDecodeError):
        await aioproc.run(["printf", "\\377"], capture_output=True, encoding="utf-8")


async def test_text_mode_universal_newlines() -> None:
    script = "printf 'a\\r\\nb\\rc\\n'; printf 'e1\\r\\ne2\\r' >&2"
    result = await aioproc.run(["sh", "-c", script], capture_output=True, text=True)
    assert result.stdout == "a\nb\nc\n"
    assert result.stderr == "e1\ne2\n"


async def test_binary_mode_keeps_carriage_returns() -> None:
    result = await aioproc.run(["printf", "a\\r\\nb\\r"], capture_output=True)
    assert result.stdout == b"a\r\nb\r"


async def test_big_input_and_output_together() -> None:
    # Both pipes full at once: run() must feed and read concurrently.
    data = os.urandom(10 * MiB)
    result = await asyncio.wait_for(aioproc.run(["cat"], input=data, capture_output=True), TIMEOUT)
    assert result.stdout == data


async def test_big_input_to_child_that_never_reads() -> None:
    result = await asyncio.wait_for(
        aioproc.run(["sh", "-c", "echo done"], input=b"x" * (10 * MiB), capture_output=True),
        TIMEOUT,
    )
    assert result.stdout == b"done\n"
    assert result.returncode == 0


async def test_spawn_failure_leaves_nothing() -> None:
    with pytest.raises(FileNotFoundError):
        await aioproc.run(["/nonexistent/program"], input=b"x", capture_output=True)


# ================================================================= argument checks
@pytest.mark.parametrize("stream", ["stdout", "stderr"])
async def test_capture_output_conflicts_with_stdout_or_stderr(stream: str) -> None:
    with pytest.raises(ValueError, match="capture_output"):
        await aioproc.run(["true"], capture_output=True, **{stream: DEVNULL})


async def test_input_conflicts_with_stdin() -> None:
    with pytest.raises(ValueError, match="stdin and input"):
        await aioproc.run(["cat"], input=b"x", stdin=DEVNULL)


async def test_negative_timeout() -> None:
    with pytest.raises(ValueError, match="timeout"):
        await aioproc.run(["true"], timeout=-1)


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), float("-inf")])
async def test_nan_or_infinite_timeout_is_refused_before_anything_starts(timeout: float) -> None:
    # A NaN timer in asyncio's heap broke the order of the loop's timers;
    # None, not infinity, is how to say "no timeout".
    before = children_of()
    with pytest.raises(ValueError, match="timeout must"):
        await aioproc.run(["sleep", "30"], timeout=timeout)
    assert children_of() == before


# ================================================================= check
async def test_check_raises_process_error() -> None:
    argv = ["sh", "-c", "echo out; echo err >&2; exit 3"]
    with pytest.raises(subprocess.CalledProcessError) as excinfo:
        await aioproc.run(argv, capture_output=True, check=True)
    err = excinfo.value
    assert isinstance(err, aioproc.ProcessError)
    assert isinstance(err, aioproc.Error)
    assert err.returncode == 3
    assert err.cmd == argv
    assert err.output == b"out\n"
    assert err.stdout == b"out\n"
    assert err.stderr == b"err\n"
    assert err.status.exit_code == 3
    assert "exit status 3" in str(err)


async def test_check_text_mode_output_is_str() -> None:
    with pytest.raises(aioproc.ProcessError) as excinfo:
        await aioproc.run(
            ["sh", "-c", "echo boom; exit 1"], capture_output=True, text=True, check=True
        )
    assert excinfo.value.output == "boom\n"


async def test_check_success_returns_result() -> None:
    result = await aioproc.run(["echo", "ok"], capture_output=True, check=True)
    assert result.stdout == b"ok\n"
    assert result.status.success


async def test_exit_by_signal() -> None:
    result = await aioproc.run(["sh", "-c", "kill -TERM $$"])
    assert result.returncode == -signal.SIGTERM
    assert result.status.signal == signal.SIGTERM
    assert result.status.exit_code is None
    assert not result.status.success
    with pytest.raises(aioproc.ProcessError) as excinfo:
        await aioproc.run(["sh", "-c", "kill -KILL $$"], check=True)
    assert excinfo.value.returncode == -signal.SIGKILL
    assert excinfo.value.status.signal == signal.SIGKILL
    assert "SIGKILL" in str(excinfo.value)


# ================================================================= timeout
async def test_timeout_not_reached() -> None:
    result = await aioproc.run(["echo", "fast"], capture_output=True, timeout=TIMEOUT)
    assert result.stdout == b"fast\n"


async def test_timeout_stops_reaps_and_keeps_output(wait_mode: str) -> None:
    script = "echo $$; echo err >&2; exec sleep 30"
    start = time.monotonic()
    with pytest.raises(aioproc.TimeoutExpired) as excinfo:
        await aioproc.run(["sh", "-c", script], capture_output=True, timeout=0.5)
    elapsed = time.monotonic() - start
    err = excinfo.value
    assert isinstance(err, subprocess.TimeoutExpired)
    assert isinstance(err, TimeoutError)
    assert isinstance(err, aioproc.Error)
    assert err.timeout == 0.5
    assert err.cmd == ["sh", "-c", script]
    assert "timed out after 0.5 seconds" in str(err)
    # The output so far, and the child stopped (by SIGTERM) and reaped.
    assert isinstance(err.output, bytes)
    pid = int(err.output)
    assert err.stderr == b"err\n"
    assert err.status is not None
    assert err.status.pid == pid
    assert err.status.signal == signal.SIGTERM
    assert_gone(pid)
    assert 0.5 - TIMER_SLACK <= elapsed < 5


async def test_timeout_text_mode() -> None:
    script = "printf 'a\\r\\n'; printf 'b\\r\\n' >&2; exec sleep 30"
    with pytest.raises(aioproc.TimeoutExpired) as excinfo:
        await aioproc.run(["sh", "-c", script], capture_output=True, text=True, timeout=0.5)
    assert excinfo.value.output == "a\n"
    assert excinfo.value.stderr == "b\n"


async def test_timeout_text_mode_character_cut_by_the_stop() -> None:
    # The child is stopped in the middle of a UTF-8 character: the timeout must
    # still be reported (not a UnicodeDecodeError), with what can be decoded.
    script = "printf 'ok \\303'; printf 'e \\342\\202' >&2; exec sleep 30"
    with pytest.raises(aioproc.TimeoutExpired) as excinfo:
        await aioproc.run(["sh", "-c", script], capture_output=True, text=True, timeout=0.5)
    assert excinfo.value.output == "ok "
    assert excinfo.value.stderr == "e "


async def test_timeout_text_mode_undecodable_output_stays_bytes() -> None:
    script = "printf 'bad \\377 byte'; exec sleep 30"
    with pytest.raises(aioproc.TimeoutExpired) as excinfo:
        await aioproc.run(["sh", "-c", script], capture_output=True, text=True, timeout=0.5)
    assert excinfo.value.output == b"bad \xff byte"
    assert excinfo.value.stderr == ""


async def test_timeout_keeps_output_written_while_stopping() -> None:
    # What the child writes as it handles SIGTERM comes after run() stopped
    # reading; it must still be in the exception.
    code = (
        "import signal, sys, time\n"
        "def bye(*_):\n"
        "    sys.stdout.write('bye\\n')\n"
        "    sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('hi', flush=True)\n"
        "time.sleep(30)\n"
    )
    with pytest.raises(aioproc.TimeoutExpired) as excinfo:
        await aioproc.run([PY, "-S", "-c", code], capture_output=True, timeout=0.5)
    assert excinfo.value.output == b"hi\nbye\n"
    assert excinfo.value.status is not None
    assert excinfo.value.status.exit_code == 3


async def test_timeout_without_capture() -> None:
    with pytest.raises(aioproc.TimeoutExpired) as excinfo:
        await aioproc.run(["sleep", "30"], timeout=0)
    assert excinfo.value.output is None
    assert excinfo.value.stderr is None
    assert excinfo.value.status is not None
    assert not excinfo.value.status.success


async def test_timeout_child_ignoring_sigterm_gets_sigkill(wait_mode: str) -> None:
    script = "trap '' TERM; echo $$; exec sleep 30"
    start = time.monotonic()
    with pytest.raises(aioproc.TimeoutExpired) as excinfo:
        await aioproc.run(["sh", "-c", script], stdout=PIPE, timeout=0.5, stop_timeout=0.3)
    elapsed = time.monotonic() - start
    err = excinfo.value
    assert isinstance(err.output, bytes)
    pid = int(err.output)  # printed after the trap: SIGTERM was ignored
    assert err.status is not None
    assert err.status.signal == signal.SIGKILL
    assert err.status.returncode == -signal.SIGKILL
    assert_gone(pid)
    # The grace period was waited for, but not the default stop_timeout (5 s).
    assert 0.8 - TIMER_SLACK <= elapsed < 4


# ------------------------------------- kill_group: the group after its leader exits
def _dead(pid: int) -> bool:
    return process_state(pid) in (None, "Z")


async def test_timeout_after_leader_exit_sweeps_group_and_says_why(wait_mode: str) -> None:
    # The example: the leader exits at once, a background job keeps
    # the output pipes open, the timeout fires. The job must be gone (it was
    # reached through the group id that the unreaped leader pinned), and the
    # error must say that the leader had exited and who held the pipes.
    with pytest.raises(aioproc.TimeoutExpired) as info:
        await aioproc.run(
            ["sh", "-c", "sleep 21 & echo $!"], capture_output=True, timeout=0.5, kill_group=True
        )
    exc = info.value
    job = int(exc.output.split()[0])
    assert _dead(job), f"the background job {job} survived run()"
    assert exc.status is not None
    assert exc.status.exit_code == 0
    assert re.search(
        rf"process \d+ exited with code 0, but its output pipes stayed open past the "
        rf"timeout: held by sleep \(pid {job}\)",
        str(exc),
    ), str(exc)


async def test_timeout_while_running_has_no_detail() -> None:
    with pytest.raises(aioproc.TimeoutExpired) as info:
        await aioproc.run(["sleep", "5"], capture_output=True, timeout=0.05, kill_group=True)
    assert info.value.detail is None
    assert str(info.value).endswith("timed out after 0.05 seconds")


async def test_kill_group_sweeps_background_job_after_a_clean_exit(wait_mode: str) -> None:
    # No timeout: the leader exits 0 and the job does not hold the pipes.
    # run() still leaves nothing of the group behind.
    result = await aioproc.run(
        ["sh", "-c", "sleep 22 >/dev/null 2>&1 & echo $!"], capture_output=True, kill_group=True
    )
    job = int(result.stdout.split()[0])
    assert result.returncode == 0
    assert _dead(job), f"the background job {job} survived run()"


async def test_without_kill_group_the_background_job_is_left_alone() -> None:
    result = await aioproc.run(
        ["sh", "-c", "sleep 23 >/dev/null 2>&1 & echo $!"], capture_output=True
    )
    job = int(result.stdout.split()[0])
    try:
        assert not _dead(job)
    finally:
        os.kill(job, signal.SIGKILL)


async def test_big_output_captured_before_timeout() -> None:
    # 1 MiB more than the pipe holds: what the child wrote before the timeout is kept.
    script = "head -c 1048576 /dev/zero; echo $$ >&2; exec sleep 30"
    with pytest.raises(aioproc.TimeoutExpired) as excinfo:
        await aioproc.run(["sh", "-c", script], capture_output=True, timeout=0.5)
    assert excinfo.value.output == b"\0" * MiB
    assert isinstance(excinfo.value.stderr, bytes)
    assert_gone(int(excinfo.value.stderr))


# ================================================================= cancellation
async def test_cancel_stops_and_reaps_the_child(wait_mode: str) -> None:
    with report_pipe() as (w, report):
        task = asyncio.ensure_future(
            aioproc.run(["sh", "-c", "echo $$; exec sleep 30"], stdout=w, stop_timeout=2)
        )
        pid = await read_pid(report)
        assert pid in children_of()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert_gone(pid)


async def test_cancel_child_ignoring_sigterm(wait_mode: str) -> None:
    script = "trap '' TERM; echo $$; exec sleep 30"
    with report_pipe() as (w, report):
        task = asyncio.ensure_future(aioproc.run(["sh", "-c", script], stdout=w, stop_timeout=0.3))
        pid = await read_pid(report)
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        elapsed = time.monotonic() - start
        assert_gone(pid)
        assert 0.3 - TIMER_SLACK <= elapsed < 4


async def test_cancel_with_pipes_open(wait_mode: str) -> None:
    # Cancelled while feeding stdin and reading stdout/stderr.
    script = "echo $$ >&2; exec cat"
    with report_pipe() as (w, report):
        task = asyncio.ensure_future(
            aioproc.run(["sh", "-c", script], input=b"x" * MiB, stdout=PIPE, stderr=w)
        )
        pid = await read_pid(report)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert_gone(pid)


async def test_outer_wait_for_timeout_stops_and_reaps() -> None:
    with report_pipe() as (w, report):
        run = aioproc.run(["sh", "-c", "echo $$; exec sleep 30"], stdout=w)
        task = asyncio.ensure_future(asyncio.wait_for(run, 0.5))
        pid = await read_pid(report)
        with pytest.raises(asyncio.TimeoutError):
            await task
        assert_gone(pid)


async def test_cancel_while_stopping_after_timeout(wait_mode: str) -> None:
    """Cancelled while run() stops a timed-out child: still reaped, and no pipe left open."""
    # The loop's first spawn opens its pidfd watcher (one epoll per loop, kept
    # for the loop's life): make it exist before counting.
    await aioproc.run(["true"])
    with report_pipe() as (w, report):
        fds_before = open_fds()
        task = asyncio.ensure_future(
            aioproc.run(
                [PY, "-S", "-c", TERM_REPORTER],
                stdout=PIPE,
                stderr=w,
                timeout=0.5,
                stop_timeout=0.5,
            )
        )
        pid = await read_pid(report)
        # run() timed out and sent SIGTERM; it now waits for stop_timeout.
        assert await asyncio.wait_for(report.readline(), TIMEOUT) == b"term\n"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert_gone(pid)
        # The task (holding the traceback, so the Process) is still alive here:
        # a pipe run() forgot to close would still be open.
        left_open = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in open_fds() - fds_before}
        assert not left_open, f"run() left descriptors open: {left_open}"


@pytest.mark.parametrize("inner", ["Process.stop", "Process._aclose"])
async def test_cancel_arriving_as_the_stop_after_a_timeout_ends_is_not_lost(
    wait_mode: str, inner: str
) -> None:
    # After the timeout, run() stops the child (shielded), then closes it
    # (shielded): a cancellation requested in the loop turn in which either
    # ends must come out of run(), not a TimeoutExpired nor a result.
    returned = []

    async def call() -> None:
        with contextlib.suppress(aioproc.TimeoutExpired):
            await aioproc.run(["sleep", "30"], timeout=0.01)
        returned.append(True)

    task = asyncio.ensure_future(call())
    await cancel_as_it_finishes(task, inner)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert returned == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"encoding": "bogus"}, "unknown encoding: bogus"),
        ({"errors": "bogus"}, "unknown error handler name 'bogus'"),
        ({"text": True, "errors": "bogus"}, "unknown error handler name 'bogus'"),
        ({"encoding": "utf-8", "errors": "bogus", "input": b"x"}, "bogus"),
    ],
)
async def test_unknown_encoding_fails_before_the_child_starts(
    tmp_path: Path, kwargs: dict[str, object], match: str
) -> None:
    # It used to fail decoding the output, after the child had run.
    marker = tmp_path / "ran"
    before = children_of()
    with pytest.raises(LookupError, match=match):
        await aioproc.run(["touch", marker], capture_output=True, **kwargs)  # type: ignore[arg-type]
    assert not marker.exists(), "the child was started"
    assert children_of() == before

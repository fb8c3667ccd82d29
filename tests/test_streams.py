"""Tests for aioproc._streams: ProcessReader and ProcessWriter on real pipes to real children.

Every async test runs on the default asyncio loop and on uvloop (see conftest.py).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import hashlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import pytest
import uvloop
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.stapled import StapledByteStream
from anyio.streams.text import TextReceiveStream, TextSendStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aioproc
from aioproc import PIPE, Process, ProcessReader, ProcessWriter

# no_leaks (conftest.py): after each test, no child or zombie, descriptor or thread is left.
pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(30)]

PY = sys.executable
TIMEOUT = 10.0  # generous: only reached when something hangs
KiB = 1024
MiB = 1024 * KiB


# ----------------------------------------------------------------- helpers
def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Yield to the loop until *predicate* holds (e.g. a reader took a chunk)."""
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0)


async def let_tasks_block() -> None:
    """Let freshly created tasks run up to their first real wait.

    Tasks run in FIFO order, so one pass of the loop is enough for a task
    created just before to start and block on the pipe.
    """
    await asyncio.sleep(0)


def pipes(proc: Process) -> tuple[ProcessWriter, ProcessReader]:
    assert proc.stdin is not None
    assert proc.stdout is not None
    return proc.stdin, proc.stdout


def stdout_of(proc: Process) -> ProcessReader:
    assert proc.stdout is not None
    return proc.stdout


def stdin_of(proc: Process) -> ProcessWriter:
    assert proc.stdin is not None
    return proc.stdin


# ================================================================= reading
async def test_read_all_then_eof() -> None:
    async with aioproc.spawn(["printf", "hello\\nworld"], stdout=PIPE) as proc:
        out = stdout_of(proc)
        assert not out.at_eof()
        assert await out.read() == b"hello\nworld"
        assert out.at_eof()
        # EOF is sticky for every reading method.
        assert await out.read() == b""
        assert await out.read(10) == b""
        assert await out.readline() == b""
        assert (await proc.wait()).success


async def test_read_n_returns_at_most_n() -> None:
    async with aioproc.spawn(["printf", "abcdefghij"], stdout=PIPE) as proc:
        out = stdout_of(proc)
        assert await out.read(0) == b""
        assert await out.read(3) == b"abc"
        assert await out.read(3) == b"def"
        assert not out.at_eof()
        assert await out.read(100) == b"ghij"
        assert await out.read(100) == b""
        assert out.at_eof()


async def test_read_zero_does_not_wait() -> None:
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
        # cat has written nothing: read(0) must not wait for it.
        assert await asyncio.wait_for(stdout_of(proc).read(0), TIMEOUT) == b""


async def test_readline_with_partial_last_line() -> None:
    async with aioproc.spawn(["printf", "one\\ntwo\\n\\nthree"], stdout=PIPE) as proc:
        out = stdout_of(proc)
        assert await out.readline() == b"one\n"
        assert await out.readline() == b"two\n"
        assert await out.readline() == b"\n"
        assert await out.readline() == b"three"
        assert out.at_eof()
        assert await out.readline() == b""
        assert await out.readline() == b""


async def test_async_for_yields_lines() -> None:
    async with aioproc.spawn(["printf", "a\\nbb\\n\\nlast"], stdout=PIPE) as proc:
        lines = [line async for line in stdout_of(proc)]
    assert lines == [b"a\n", b"bb\n", b"\n", b"last"]


async def test_async_for_many_lines_across_chunks() -> None:
    code = "import sys\nfor i in range(20000): sys.stdout.write(f'line {i}\\n')"
    async with aioproc.spawn([PY, "-c", code], stdout=PIPE) as proc:
        lines = [line async for line in stdout_of(proc)]
    assert lines == [f"line {i}\n".encode() for i in range(20000)]


async def test_readexactly() -> None:
    async with aioproc.spawn(["printf", "0123456789"], stdout=PIPE) as proc:
        out = stdout_of(proc)
        assert await out.readexactly(0) == b""
        assert await out.readexactly(4) == b"0123"
        with pytest.raises(asyncio.IncompleteReadError) as excinfo:
            await out.readexactly(20)
        assert excinfo.value.partial == b"456789"
        assert excinfo.value.expected == 20
        assert out.at_eof()
        with pytest.raises(asyncio.IncompleteReadError) as excinfo:
            await out.readexactly(1)
        assert excinfo.value.partial == b""
        with pytest.raises(ValueError, match="less than zero"):
            await out.readexactly(-1)


async def test_readexactly_waits_for_more_data() -> None:
    # The child sends the bytes in two writes, the second only once we answer.
    script = "printf ab; read x; printf cd"
    async with aioproc.spawn(["sh", "-c", script], stdin=PIPE, stdout=PIPE) as proc:
        stdin, out = pipes(proc)
        task = asyncio.ensure_future(out.readexactly(4))
        await until(lambda: "buffered=2" in repr(out), "the first two bytes were read")
        assert not task.done()
        stdin.write(b"\n")
        assert await task == b"abcd"


async def test_readuntil_and_incomplete_read_at_eof() -> None:
    async with aioproc.spawn(["printf", "a::b::c"], stdout=PIPE) as proc:
        out = stdout_of(proc)
        assert await out.readuntil(b"::") == b"a::"
        assert await out.readuntil(b"::") == b"b::"
        with pytest.raises(asyncio.IncompleteReadError) as excinfo:
            await out.readuntil(b"::")
        assert excinfo.value.partial == b"c"
        assert excinfo.value.expected is None
        assert out.at_eof()
        with pytest.raises(ValueError, match="separator"):
            await out.readuntil(b"")


async def test_readuntil_separator_split_across_reads() -> None:
    # "abc-" arrives first; the second "-" of the separator only with the next write.
    script = "printf abc-; read x; printf %s -def--"
    async with aioproc.spawn(["sh", "-c", script], stdin=PIPE, stdout=PIPE) as proc:
        stdin, out = pipes(proc)
        task = asyncio.ensure_future(out.readuntil(b"--"))
        await until(lambda: "buffered=4" in repr(out), "the first chunk was read")
        assert not task.done()
        stdin.write(b"\n")
        assert await task == b"abc--"
        assert await out.readuntil(b"--") == b"def--"


# ---------------------------------------------- asyncio.StreamReader as oracle
Op = tuple[str, Any]

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("readline"), st.none()),
        st.tuples(st.just("readexactly"), st.integers(0, 12)),
        st.tuples(st.just("readuntil"), st.sampled_from([b"\n", b"--", b"ab"])),
        st.tuples(st.just("read"), st.just(-1)),
    ),
    max_size=12,
)
DATA = st.lists(st.sampled_from([b"a", b"b", b"\n", b"-", b"x"]), max_size=80).map(b"".join)


async def _outcome(reader: Any, op: Op) -> tuple[Any, ...]:
    name, arg = op
    try:
        result = await (getattr(reader, name)() if arg is None else getattr(reader, name)(arg))
    except asyncio.IncompleteReadError as exc:
        return ("IncompleteReadError", exc.partial, exc.expected)
    except (asyncio.LimitOverrunError, ValueError) as exc:
        return (type(exc).__name__,)  # the details may depend on how the data was split
    return ("ok", result)


async def _compare_with_asyncio(
    data: bytes, cuts: Sequence[int], limit: int, ops: Sequence[Op]
) -> None:
    oracle = asyncio.StreamReader(limit=limit)
    oracle.feed_data(data)
    oracle.feed_eof()

    r, w = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(r, False)
    reader = ProcessReader(r, asyncio.get_running_loop(), limit=limit)

    write_end_open = True

    async def feed() -> None:
        # The data arrives in pieces (all fit in the pipe, so writing never blocks).
        nonlocal write_end_open
        pos = 0
        for cut in [*cuts, len(data)]:
            if pos >= len(data):
                break
            os.write(w, data[pos : pos + cut])
            pos += cut
            for _ in range(3):  # let the reader take this piece on its own
                await asyncio.sleep(0)
        os.close(w)
        write_end_open = False

    feeder = asyncio.ensure_future(feed())
    try:
        for op in ops:
            expected = await _outcome(oracle, op)
            assert await _outcome(reader, op) == expected, op
            if expected[0] in ("LimitOverrunError", "ValueError"):
                break  # what is left now depends on how the data was split
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
        reader.close()
        if write_end_open:
            os.close(w)


@pytest.mark.parametrize(
    "factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
def test_reading_matches_asyncio_stream_reader(
    factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """Whatever the data and however it is split, the results are asyncio's."""
    loop = factory()  # (asyncio.Runner is 3.11+)
    try:

        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(
            data=DATA,
            cuts=st.lists(st.integers(1, 10), max_size=20),
            limit=st.integers(1, 12),
            ops=OPS,
        )
        def check(data: bytes, cuts: list[int], limit: int, ops: list[Op]) -> None:
            loop.run_until_complete(_compare_with_asyncio(data, cuts, limit, ops))

        check()
    finally:
        loop.close()


# ------------------------------------------------------------------- limit
async def test_readline_accepts_a_line_of_exactly_limit_bytes() -> None:
    # As asyncio: `limit` bounds the line without its separator.
    async with aioproc.spawn(["printf", "12345678\\nok\\n"], stdout=PIPE, limit=8) as proc:
        out = stdout_of(proc)
        assert await out.readline() == b"12345678\n"
        assert await out.readline() == b"ok\n"


async def test_readline_too_long_raises_value_error_and_skips_the_line() -> None:
    data = "x" * 40 + "\\nnext\\n" + "y" * 9 + "\\nlast"
    async with aioproc.spawn(["printf", data], stdout=PIPE, limit=8) as proc:
        out = stdout_of(proc)
        with pytest.raises(ValueError, match="limit"):
            await out.readline()
        # As asyncio: the over-long line is dropped and reading goes on after it.
        assert await out.readline() == b"next\n"
        with pytest.raises(ValueError, match="limit"):
            await out.readline()
        assert await out.readline() == b"last"
        assert await out.readline() == b""


async def test_async_for_raises_value_error_on_overlong_line() -> None:
    async with aioproc.spawn(["printf", "ok\\n" + "z" * 100], stdout=PIPE, limit=16) as proc:
        seen = []

        async def collect() -> None:
            async for line in stdout_of(proc):
                seen.append(line)

        with pytest.raises(ValueError, match="limit"):
            await collect()
        assert seen == [b"ok\n"]


async def test_readuntil_limit_overrun_keeps_the_data() -> None:
    async with aioproc.spawn(["printf", "x" * 20 + ";rest"], stdout=PIPE, limit=8) as proc:
        out = stdout_of(proc)
        with pytest.raises(asyncio.LimitOverrunError) as excinfo:
            await out.readuntil(b";")
        assert excinfo.value.consumed == 20
        # readuntil() leaves the buffer alone (as asyncio); the caller decides.
        assert await out.read() == b"x" * 20 + b";rest"


async def test_readuntil_limit_overrun_without_separator() -> None:
    async with aioproc.spawn(["printf", "y" * 30], stdout=PIPE, limit=8) as proc:
        out = stdout_of(proc)
        with pytest.raises(asyncio.LimitOverrunError, match="not found"):
            await out.readuntil(b"\n")
        with pytest.raises(ValueError, match="limit"):
            await out.readline()
        assert await out.readline() == b""


@pytest.mark.parametrize("limit", [2**40, 2**64])
async def test_a_huge_limit_means_no_limit(limit: int) -> None:
    # A read used to ask for `limit` bytes at once: MemoryError for 2**40,
    # OverflowError for 2**64, with the child already started.
    line = b"x" * (3 * MiB) + b"\n"
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE, limit=limit) as proc:
        stdin, out = pipes(proc)
        writing = asyncio.ensure_future(stdin.send(line))
        assert await out.readline() == line
        await writing
    result = await aioproc.run(["echo", "hi"], capture_output=True, limit=limit)
    assert result.stdout == b"hi\n"


async def test_limit_must_be_positive() -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(ValueError, match="limit"):
        ProcessReader(-1, loop, limit=0)
    with pytest.raises(ValueError, match="limit"):
        await aioproc.spawn(["true"], stdout=PIPE, limit=0)


# -------------------------------------------------------- EOF while running
async def test_child_closes_stdout_early() -> None:
    # EOF arrives while the child keeps running (until we close its stdin).
    script = "printf early; exec >&-; read x; exit 7"
    async with aioproc.spawn(["sh", "-c", script], stdin=PIPE, stdout=PIPE) as proc:
        stdin, out = pipes(proc)
        assert await out.read() == b"early"
        assert out.at_eof()
        assert proc.returncode is None
        stdin.close()
        await stdin.wait_closed()
        assert (await proc.wait()).exit_code == 7


async def test_read_available() -> None:
    async with aioproc.spawn(["printf", "abc"], stdout=PIPE) as proc:
        out = stdout_of(proc)
        await proc.wait()
        assert out.read_available() == b"abc"
        assert out.at_eof()
        assert out.read_available() == b""


# ------------------------------------------------- concurrency and closing
async def test_concurrent_readers_get_busy_resource_error() -> None:
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
        stdin, out = pipes(proc)
        first = asyncio.ensure_future(out.readline())
        await let_tasks_block()
        assert not first.done()
        with pytest.raises(anyio.BusyResourceError):
            await out.read(1)
        with pytest.raises(anyio.BusyResourceError):
            await out.readline()
        with pytest.raises(anyio.BusyResourceError):
            await out.receive()
        # The first reader is unaffected.
        stdin.write(b"line\n")
        assert await first == b"line\n"


async def test_cancelled_read_leaves_the_stream_usable() -> None:
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
        stdin, out = pipes(proc)
        task = asyncio.ensure_future(out.readline())
        await let_tasks_block()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stdin.write(b"again\n")
        assert await out.readline() == b"again\n"


async def test_close_while_another_task_reads() -> None:
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
        out = stdout_of(proc)
        task = asyncio.ensure_future(out.read(10))
        await let_tasks_block()
        out.close()
        assert out.closed
        with pytest.raises(anyio.ClosedResourceError):
            await asyncio.wait_for(task, TIMEOUT)
        out.close()  # idempotent
        await out.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await out.read()
        with pytest.raises(anyio.ClosedResourceError):
            await out.readline()
        with pytest.raises(anyio.ClosedResourceError):
            await out.receive()
        assert "closed" in repr(out)


async def test_close_drops_buffered_data() -> None:
    # After close(), reading raises even if data was buffered (anyio's contract).
    async with aioproc.spawn(["printf", "abc"], stdout=PIPE) as proc:
        out = stdout_of(proc)
        assert await out.readexactly(1) == b"a"
        assert "buffered=2" in repr(out)
        out.close()
        with pytest.raises(anyio.ClosedResourceError):
            await out.readexactly(1)
        with pytest.raises(anyio.ClosedResourceError):
            await out.read(1)
        with pytest.raises(anyio.ClosedResourceError):
            await out.receive()
        assert out.read_available() == b""


@pytest.mark.parametrize("closer_registered", ["before", "after"])
async def test_close_between_wakeup_and_resumption(closer_registered: str) -> None:
    """A reader woken by data and closed before it resumes must not touch the fd.

    The closer watches a duplicate of the same pipe, so both callbacks usually
    become ready in the same loop iteration; which runs first depends on the loop
    and the registration order, hence both orders. Whatever the order, a reader
    closed before it has resumed must get ClosedResourceError, never read a closed
    (or reused) fd. Now and then (2 CPUs) epoll_wait harvests the pipe's readiness
    between its two watchers' wakeups: the closer then runs a loop turn later,
    after the read has completed, and that attempt is tried again.
    """
    for _ in range(20):
        if await _close_between_wakeup_and_resumption(closer_registered):
            return
    pytest.fail("the close never came between the wakeup and the resumption in 20 tries")


async def _close_between_wakeup_and_resumption(closer_registered: str) -> bool:
    """One try: True if the close came before the reader resumed (and was refused)."""
    loop = asyncio.get_running_loop()
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
        stdin, out = pipes(proc)
        dup = os.dup(out.fileno())
        read_done_at_close: list[bool] = []
        try:

            def close_reader() -> None:
                loop.remove_reader(dup)
                read_done_at_close.append(task.done())
                out.close()

            if closer_registered == "before":
                loop.add_reader(dup, close_reader)
            task = asyncio.ensure_future(out.read(10))
            await let_tasks_block()
            if closer_registered == "after":
                loop.add_reader(dup, close_reader)
            stdin.write(b"x")
            try:
                data = await asyncio.wait_for(task, TIMEOUT)
            except anyio.ClosedResourceError:
                assert read_done_at_close == [False]
                return True
            # The read resumed first: the closer had not run before it ended.
            assert data == b"x"
            assert read_done_at_close in ([], [True])
            return False
        finally:
            loop.remove_reader(dup)
            os.close(dup)


async def test_repr_and_fileno() -> None:
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
        stdin, out = pipes(proc)
        assert f"fd={out.fileno()}" in repr(out)
        assert f"fd={stdin.fileno()}" in repr(stdin)
        stdin.close()
        assert "closed" in repr(stdin)


# ================================================================= writing
async def test_write_drain_close_wait_closed() -> None:
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
        stdin, out = pipes(proc)
        stdin.write(b"hello ")
        stdin.write(bytearray(b"big "))
        stdin.writelines([memoryview(b"wide "), b"world\n"])
        stdin.write(b"")
        await stdin.drain()
        assert stdin.can_write_eof()
        stdin.write_eof()
        assert stdin.is_closing()
        await stdin.wait_closed()
        assert stdin.closed
        assert await out.read() == b"hello big wide world\n"
        assert (await proc.wait()).success


async def test_wait_closed_waits_for_buffered_data() -> None:
    data = os.urandom(2 * MiB)
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
        stdin, out = pipes(proc)
        stdin.write(data)  # far more than a pipe holds: most of it is buffered
        stdin.close()
        assert stdin.is_closing()
        assert not stdin.closed  # not until the buffer is written
        reading = asyncio.ensure_future(out.read())
        await asyncio.wait_for(stdin.wait_closed(), TIMEOUT)
        assert stdin.closed
        assert await reading == data


async def test_drain_waits_for_the_child_to_read() -> None:
    # cat echoes only what we let through: drain() returns once the pipe took it.
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
        stdin, out = pipes(proc)
        stdin.write(b"a" * MiB)
        drain = asyncio.ensure_future(stdin.drain())
        received = 0
        while not drain.done():
            received += len(await out.read(64 * KiB))
        await drain
        stdin.close()
        received += len(await out.read())
        assert received == MiB


async def test_write_after_close() -> None:
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
        stdin = stdin_of(proc)
        stdin.close()
        stdin.close()  # idempotent
        with pytest.raises(anyio.ClosedResourceError):
            stdin.write(b"late")
        with pytest.raises(anyio.ClosedResourceError):
            stdin.write(b"")
        with pytest.raises(anyio.ClosedResourceError):
            await stdin.send(b"late")
        await stdin.drain()  # nothing buffered: returns
        assert await stdout_of(proc).read() == b""


async def test_write_rejects_non_bytes() -> None:
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
        with pytest.raises(TypeError, match="bytes-like"):
            stdin_of(proc).write("text")  # type: ignore[arg-type]


async def test_write_memoryview_of_wide_items() -> None:
    # A memoryview whose items are not bytes, too big for one os.write():
    # the unwritten rest must be counted in bytes, not items.
    arr = array.array("i", range(300_000))
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
        stdin, out = pipes(proc)
        stdin.write(memoryview(arr))
        stdin.close()
        assert await out.read() == arr.tobytes()


async def test_abort_drops_buffered_data() -> None:
    async with aioproc.spawn(["sleep", "30"], stdin=PIPE) as proc:
        stdin = stdin_of(proc)
        stdin.write(b"x" * MiB)
        assert not stdin.closed
        stdin.abort()
        assert stdin.closed
        await stdin.wait_closed()
        with pytest.raises(anyio.ClosedResourceError):
            stdin.write(b"x")


async def test_abort_fails_pending_send_and_drain() -> None:
    # Data dropped by abort() must not be reported as sent.
    async with aioproc.spawn(["sleep", "30"], stdin=PIPE) as proc:
        stdin = stdin_of(proc)
        send = asyncio.ensure_future(stdin.send(b"s" * MiB))
        await let_tasks_block()
        drain = asyncio.ensure_future(stdin.drain())
        await let_tasks_block()
        assert not send.done()
        assert not drain.done()
        stdin.abort()
        with pytest.raises(anyio.ClosedResourceError):
            await send
        with pytest.raises(anyio.ClosedResourceError):
            await drain
        await stdin.wait_closed()


async def test_repeated_errors_do_not_grow_tracebacks() -> None:
    # Each raise of the stored error must not add frames to one shared
    # exception (which would keep every raising frame alive).
    script = "exec 0<&-; echo closed; exec sleep 30"
    async with aioproc.spawn(["sh", "-c", script], stdin=PIPE, stdout=PIPE) as proc:
        stdin, out = pipes(proc)
        assert await out.readline() == b"closed\n"
        depths = []
        for _ in range(20):
            try:
                stdin.write(b"x")
            except BrokenPipeError as exc:
                depths.append(len(traceback.extract_tb(exc.__traceback__)))
            try:
                await stdin.drain()
            except BrokenPipeError as exc:
                depths.append(len(traceback.extract_tb(exc.__traceback__)))
        assert len(depths) == 40
        assert max(depths) <= 3, depths


async def test_cancelled_drain_leaves_the_writer_usable() -> None:
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
        stdin, out = pipes(proc)
        payload = b"p" * MiB
        stdin.write(payload)
        drain = asyncio.ensure_future(stdin.drain())
        await let_tasks_block()
        drain.cancel()
        with pytest.raises(asyncio.CancelledError):
            await drain
        stdin.write(b"tail")
        stdin.close()
        assert await out.read() == payload + b"tail"


# --------------------------------------------- a child that does not read
async def test_drain_blocks_then_killed_child_gives_broken_pipe() -> None:
    async with aioproc.spawn(["sleep", "30"], stdin=PIPE) as proc:
        stdin = stdin_of(proc)
        stdin.write(b"x" * MiB)
        drain = asyncio.ensure_future(stdin.drain())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not drain.done(), "drain() returned although nobody reads"
        proc.kill()
        await proc.wait()
        with pytest.raises(BrokenPipeError):
            await asyncio.wait_for(drain, TIMEOUT)
        with pytest.raises(BrokenPipeError):
            stdin.write(b"more")
        with pytest.raises(BrokenPipeError):
            await stdin.drain()
        with pytest.raises(anyio.BrokenResourceError):  # anyio's send(): anyio's error
            await stdin.send(b"more")
        assert stdin.closed
        await stdin.wait_closed()
        await stdin.aclose()


async def test_child_closing_stdin_gives_broken_pipe_to_drain() -> None:
    # sh reads one line, closes its stdin, says so and lives on.
    script = "read x; exec 0<&-; echo closed; exec sleep 30"
    async with aioproc.spawn(["sh", "-c", script], stdin=PIPE, stdout=PIPE) as proc:
        stdin, out = pipes(proc)
        stdin.write(b"go\n" + b"x" * MiB)
        assert await out.readline() == b"closed\n"
        with pytest.raises(BrokenPipeError):
            await asyncio.wait_for(stdin.drain(), TIMEOUT)
        with pytest.raises(BrokenPipeError):
            stdin.write(b"more")
        assert proc.returncode is None


async def test_write_to_closed_stdin_raises_at_once() -> None:
    script = "exec 0<&-; echo closed; exec sleep 30"
    async with aioproc.spawn(["sh", "-c", script], stdin=PIPE, stdout=PIPE) as proc:
        stdin, out = pipes(proc)
        assert await out.readline() == b"closed\n"
        with pytest.raises(BrokenPipeError):
            stdin.write(b"x")
        assert stdin.closed
        with pytest.raises(BrokenPipeError):
            await stdin.drain()
        await asyncio.wait_for(stdin.wait_closed(), TIMEOUT)


async def test_close_with_pending_data_then_child_exits() -> None:
    # wait_closed() must not hang when the child goes away without reading.
    async with aioproc.spawn(["sh", "-c", "read x; exit 3"], stdin=PIPE) as proc:
        stdin = stdin_of(proc)
        stdin.write(b"\n" + b"x" * MiB)
        stdin.close()
        await asyncio.wait_for(stdin.wait_closed(), TIMEOUT)
        assert stdin.closed
        assert (await proc.wait()).exit_code == 3


# ================================================================= anyio
async def test_anyio_receive() -> None:
    async with aioproc.spawn(["printf", "0123456789"], stdout=PIPE) as proc:
        out = stdout_of(proc)
        assert isinstance(out, anyio.abc.ByteReceiveStream)
        assert await out.receive(4) == b"0123"
        assert await out.receive() == b"456789"
        with pytest.raises(anyio.EndOfStream):
            await out.receive()
        with pytest.raises(anyio.EndOfStream):
            await out.receive()


async def test_anyio_text_receive_stream_split_utf8() -> None:
    # "h", "é" split over two writes, "llo ", "€" split too: the child writes
    # the next piece only when we answer, so each piece is a separate read.
    script = r"printf 'h\303'; read x; printf '\251llo \342\202'; read x; printf '\254\n'"
    async with aioproc.spawn(["sh", "-c", script], stdin=PIPE, stdout=PIPE) as proc:
        stdin, out = pipes(proc)
        text = TextReceiveStream(out, encoding="utf-8")
        assert await text.receive() == "h"
        stdin.write(b"\n")
        assert await text.receive() == "éllo "
        stdin.write(b"\n")
        assert await text.receive() == "€\n"
        with pytest.raises(anyio.EndOfStream):
            await text.receive()


async def test_anyio_text_receive_stream_iteration() -> None:
    code = "import sys; sys.stdout.buffer.write('żółw\\n'.encode() * 50000)"
    async with aioproc.spawn([PY, "-c", code], stdout=PIPE) as proc:
        pieces = [s async for s in TextReceiveStream(stdout_of(proc), encoding="utf-8")]
    assert len(pieces) > 1
    assert "".join(pieces) == "żółw\n" * 50000


async def test_anyio_buffered_byte_receive_stream() -> None:
    async with aioproc.spawn(["printf", "HEAD:0123456789tail"], stdout=PIPE) as proc:
        buffered = BufferedByteReceiveStream(stdout_of(proc))
        assert await buffered.receive_until(b":", 10) == b"HEAD"
        assert await buffered.receive_exactly(10) == b"0123456789"
        with pytest.raises(anyio.IncompleteRead):
            await buffered.receive_exactly(10)
        await buffered.aclose()
        assert stdout_of(proc).closed


async def test_anyio_buffered_delimiter_not_found() -> None:
    async with aioproc.spawn(["printf", "a" * 50], stdout=PIPE) as proc:
        buffered = BufferedByteReceiveStream(stdout_of(proc))
        with pytest.raises(anyio.DelimiterNotFound):
            await buffered.receive_until(b";", 10)


async def test_anyio_text_send_stream() -> None:
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
        stdin, out = pipes(proc)
        assert isinstance(stdin, anyio.abc.ByteSendStream)
        text = TextSendStream(stdin, encoding="utf-8")
        await text.send("héllo ")
        await text.send("wörld\n")
        await text.aclose()
        assert stdin.closed
        assert await out.read() == "héllo wörld\n".encode()


async def test_anyio_stapled_stream_round_trip() -> None:
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
        stdin, out = pipes(proc)
        stream = StapledByteStream(stdin, out)
        await stream.send(b"ping")
        received = b""
        while len(received) < 4:
            received += await stream.receive()
        assert received == b"ping"
        await stream.send_eof()
        with pytest.raises(anyio.EndOfStream):
            await stream.receive()
        await stream.aclose()


async def test_anyio_async_with_closes_streams() -> None:
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
        stdin, out = pipes(proc)
        async with stdin:
            await stdin.send(b"data")
        assert stdin.closed
        async with out:
            assert await out.receive() == b"data"
        assert out.closed


# ------------------------------------------- anyio's stream contract, rule by rule
# anyio.abc.ByteReceiveStream / ByteSendStream / AsyncResource, as documented
# in anyio's abc/_streams.py and _resources.py, and as anyio's own
# tests/test_subprocesses.py checks its process streams.
@pytest.mark.parametrize("max_bytes", [0, -1, -65536])
async def test_anyio_receive_max_bytes_below_one_raises_value_error(max_bytes: int) -> None:
    # "raises ValueError: if max_bytes is less than 1". receive(0) used to
    # raise EndOfStream with data waiting, and receive(-1) to return it all.
    async with aioproc.spawn(["printf", "data"], stdout=PIPE) as proc:
        out = stdout_of(proc)
        assert await out.receive(1) == b"d"  # data is buffered and more is waiting
        with pytest.raises(ValueError, match="max_bytes"):
            await out.receive(max_bytes)
        assert await out.receive() == b"ata"  # nothing was consumed
        with pytest.raises(anyio.EndOfStream):
            await out.receive()


async def test_anyio_receive_never_returns_more_than_max_bytes_nor_empty() -> None:
    async with aioproc.spawn(["printf", "x" * 1000], stdout=PIPE) as proc:
        out = stdout_of(proc)
        got = []
        while True:
            try:
                got.append(await out.receive(7))
            except anyio.EndOfStream:
                break
        assert all(0 < len(chunk) <= 7 for chunk in got)
        assert b"".join(got) == b"x" * 1000


async def test_anyio_receive_at_eof_raises_end_of_stream_every_time() -> None:
    async with aioproc.spawn(["true"], stdout=PIPE) as proc:
        out = stdout_of(proc)
        for _ in range(3):
            with pytest.raises(anyio.EndOfStream):
                await out.receive()


async def test_anyio_receive_after_aclose_raises_closed_even_at_eof() -> None:
    # "raises ClosedResourceError: if the receive stream has been explicitly
    # closed" comes before EndOfStream; aclose() is idempotent.
    async with aioproc.spawn(["true"], stdout=PIPE, stderr=PIPE) as proc:
        out, err = stdout_of(proc), proc.stderr
        assert err is not None
        with pytest.raises(anyio.EndOfStream):
            await out.receive()
        await out.aclose()
        await out.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await out.receive()
        async with err:
            pass
        assert err.closed
        with pytest.raises(anyio.ClosedResourceError):
            await err.receive(1)


async def test_anyio_streams_have_no_typed_attributes() -> None:
    # TypedAttributeProvider: a lookup of an attribute the stream does not
    # provide raises TypedAttributeLookupError, or returns the default given.
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
        for stream in pipes(proc):
            assert stream.extra_attributes == {}
            with pytest.raises(anyio.TypedAttributeLookupError):
                stream.extra(anyio.abc.SocketAttribute.raw_socket)
            assert stream.extra(anyio.abc.SocketAttribute.raw_socket, None) is None


async def test_anyio_send_to_a_child_that_exited_raises_broken_resource_error() -> None:
    # "raises BrokenResourceError: if this stream has been rendered unusable
    # due to external causes"; it used to be BrokenPipeError.
    async with aioproc.spawn(["true"], stdin=PIPE) as proc:
        stdin = stdin_of(proc)
        await proc.wait()
        with pytest.raises(anyio.BrokenResourceError) as info:
            await stdin.send(b"x")
        assert isinstance(info.value.__cause__, BrokenPipeError)
        with pytest.raises(anyio.BrokenResourceError):  # and every time after
            await stdin.send(b"x")
        # The asyncio-style methods keep asyncio's error.
        with pytest.raises(BrokenPipeError):
            stdin.write(b"x")
        await stdin.aclose()  # closing a broken stream is not an error
        await stdin.aclose()


async def test_anyio_send_waiting_when_the_child_exits_raises_broken_resource_error() -> None:
    async with aioproc.spawn(["sleep", "30"], stdin=PIPE) as proc:
        stdin = stdin_of(proc)
        send = asyncio.ensure_future(stdin.send(b"x" * MiB))  # far more than the pipe holds
        await let_tasks_block()
        assert not send.done()
        proc.kill()
        with pytest.raises(anyio.BrokenResourceError):
            await asyncio.wait_for(send, TIMEOUT)


@pytest.mark.parametrize("how", ["aclose", "close", "write_eof", "abort"])
async def test_anyio_send_after_close_raises_closed_resource_error(how: str) -> None:
    # Closed here comes before broken: once we closed the stream, send() says
    # so, whether or not the child is still there to read.
    async with aioproc.spawn(["true"], stdin=PIPE) as proc:
        stdin = stdin_of(proc)
        await proc.wait()
        with pytest.raises(anyio.BrokenResourceError):
            await stdin.send(b"x")  # the pipe is broken first
        if how == "aclose":
            await stdin.aclose()
        else:
            getattr(stdin, how)()
        with pytest.raises(anyio.ClosedResourceError):
            await stdin.send(b"x")
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
        stdin = stdin_of(proc)
        await stdin.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await stdin.send(b"x")


async def test_anyio_send_rejects_str() -> None:
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
        with pytest.raises(TypeError):
            await stdin_of(proc).send("text")  # type: ignore[arg-type]


async def test_anyio_aclose_cancelled_still_closes_the_stream() -> None:
    # AsyncResource.aclose() must leave the resource closed even when it is
    # cancelled: with data the child never reads, aclose() waits for it, and
    # a timeout used to leave the pipe open for good.
    async with aioproc.spawn(["sleep", "30"], stdin=PIPE) as proc:
        stdin = stdin_of(proc)
        stdin.write(b"x" * MiB)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(stdin.aclose(), 0.05)
        assert stdin.closed
        with pytest.raises(anyio.ClosedResourceError):
            await stdin.send(b"x")
        await asyncio.wait_for(stdin.aclose(), TIMEOUT)  # idempotent, and at once now


async def test_anyio_process_streams_closed_when_aexit_is_cancelled() -> None:
    # Ported from anyio's test_process_aexit_cancellation_closes_standard_streams.
    with anyio.CancelScope() as scope:
        async with aioproc.spawn(
            [PY, "-c", "import time; time.sleep(1)"], stdin=PIPE, stdout=PIPE, stderr=PIPE
        ) as proc:
            scope.cancel()
    assert proc.returncode is not None
    assert proc.stdin is not None
    with pytest.raises(anyio.ClosedResourceError):
        await proc.stdin.send(b"foo")
    for stream in (proc.stdout, proc.stderr):
        assert stream is not None
        with pytest.raises(anyio.ClosedResourceError):
            await stream.receive(1)


# ------------------------------------------------ handing a pipe to a child
async def test_a_stream_being_handed_to_a_child_is_busy_and_blocking() -> None:
    # spawn(stdin=p1.stdout) makes the pipe end blocking for the new child;
    # meanwhile a read or write here would block the loop, so it is refused.
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
        stdin, out = pipes(proc)
        for stream in (out, stdin):
            stream._hand_over("stdin")
            assert os.get_blocking(stream.fileno())
            with pytest.raises(ValueError, match="being handed to another child"):
                stream._hand_over("stdin")
        with pytest.raises(anyio.BusyResourceError):
            await out.read(1)
        assert out.read_available() == b""  # does not read the blocking pipe
        with pytest.raises(anyio.BusyResourceError):
            stdin.write(b"x")
        for stream in (out, stdin):
            stream._handed(taken=False)  # the spawn failed: as before
            assert not os.get_blocking(stream.fileno())
            assert not stream.closed
        await stdin.send(b"x")
        assert await out.receive() == b"x"
        for stream in (out, stdin):
            stream._hand_over("stdout")
            stream._handed(taken=True)
            assert stream.closed


# ============================================================ big transfers
def _pattern_chunk(i: int) -> bytes:
    return i.to_bytes(4, "big") * (16 * KiB)  # 64 KiB, different for each i


async def test_ten_megabytes_through_cat_both_ways_bounded_memory() -> None:
    chunks = 160  # 10 MiB
    expected = hashlib.sha256()
    for i in range(chunks):
        expected.update(_pattern_chunk(i))
    async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
        stdin, out = pipes(proc)
        base = peak = rss_kib()

        async def feed() -> None:
            for i in range(chunks):
                stdin.write(_pattern_chunk(i))
                await stdin.drain()
            stdin.close()
            await stdin.wait_closed()

        async def consume() -> tuple[int, str]:
            nonlocal peak
            digest = hashlib.sha256()
            total = 0
            while data := await out.read(64 * KiB):
                digest.update(data)
                total += len(data)
                peak = max(peak, rss_kib())
            return total, digest.hexdigest()

        _, (total, digest) = await asyncio.wait_for(asyncio.gather(feed(), consume()), TIMEOUT)
    assert total == chunks * 64 * KiB
    assert digest == expected.hexdigest()
    assert peak - base < 5 * KiB, f"RSS grew by {peak - base} KiB while streaming 10 MiB"


async def test_hundred_megabytes_streamed_from_stdout_bounded_memory() -> None:
    size = 100 * MiB
    async with aioproc.spawn(["head", "-c", str(size), "/dev/zero"], stdout=PIPE) as proc:
        out = stdout_of(proc)
        base = peak = rss_kib()
        total = 0
        while chunk := await out.read(64 * KiB):
            assert len(chunk) <= 64 * KiB
            total += len(chunk)
            peak = max(peak, rss_kib())
        assert (await proc.wait()).success
    assert total == size
    assert peak - base < 5 * KiB, f"RSS grew by {peak - base} KiB while streaming 100 MiB"


async def test_communicate_big_input_to_child_that_never_reads() -> None:
    # 10 MiB for a child that exits without reading: no deadlock, no error.
    data = b"z" * (10 * MiB)
    async with aioproc.spawn(["sh", "-c", "echo done"], stdin=PIPE, stdout=PIPE) as proc:
        out, err = await asyncio.wait_for(proc.communicate(data), TIMEOUT)
        assert (out, err) == (b"done\n", None)
        assert proc.returncode == 0


async def test_communicate_big_input_to_child_that_reads_a_little() -> None:
    data = bytes(range(256)) * (40 * KiB)  # 10 MiB
    async with aioproc.spawn(["head", "-c", "100"], stdin=PIPE, stdout=PIPE) as proc:
        out, _ = await asyncio.wait_for(proc.communicate(data), TIMEOUT)
        assert out == data[:100]
        assert proc.returncode == 0

"""aioproc.compat against asyncio's own subprocess support.

The first part runs each test against ``asyncio.create_subprocess_exec`` and
against ``aioproc.compat`` (in both waiting modes), with identical
expectations: a representative subset of what asyncio's own test suite checks
(test_subprocess.py). The second part runs against compat only, where asyncio
is known to misbehave (docs/migrating.md lists those differences).
Every async test runs on the default asyncio loop and on uvloop (conftest).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import aioproc
from aioproc import compat

from .helpers import process_state

PY = sys.executable
Create = Callable[..., Awaitable[Any]]


class Impl:
    def __init__(self, name: str) -> None:
        self.name = name
        self.is_asyncio = name == "asyncio"
        mod: Any = asyncio if self.is_asyncio else compat
        self.exec: Create = mod.create_subprocess_exec
        self.shell: Create = mod.create_subprocess_shell
        self.PIPE = mod.subprocess.PIPE if self.is_asyncio else compat.PIPE
        self.STDOUT = mod.subprocess.STDOUT if self.is_asyncio else compat.STDOUT
        self.DEVNULL = mod.subprocess.DEVNULL if self.is_asyncio else compat.DEVNULL


@pytest.fixture(params=["asyncio", "compat", "compat-pid"])
def impl(request: pytest.FixtureRequest) -> Iterator[Impl]:
    """asyncio's create_subprocess_*, or aioproc.compat's (pidfd mode, then pid mode)."""
    if request.param == "compat":
        request.getfixturevalue("no_leaks")
    if request.param == "compat-pid":
        aioproc.set_wait_mode("pid")
    try:
        yield Impl(request.param)
    finally:
        aioproc.set_wait_mode("auto")


def _on_uvloop() -> bool:
    return type(asyncio.get_running_loop()).__module__.startswith("uvloop")


@pytest.fixture
def compat_only(no_leaks: None) -> Impl:
    return Impl("compat")


def test_constants_are_asyncios() -> None:
    assert (compat.PIPE, compat.STDOUT, compat.DEVNULL) == (
        asyncio.subprocess.PIPE,
        asyncio.subprocess.STDOUT,
        asyncio.subprocess.DEVNULL,
    )


def test_public_surface() -> None:
    for name in compat.__all__:
        obj = getattr(compat, name)
        if callable(obj):
            assert obj.__doc__, name
    for cls in (compat.Process, compat.StreamWriter):
        with pytest.raises(TypeError):
            cls()


# ------------------------------------------------------ the same as asyncio: pipes
async def test_echo_through_stdin_and_stdout(impl: Impl) -> None:
    proc = await impl.exec("cat", stdin=impl.PIPE, stdout=impl.PIPE)
    assert proc.returncode is None
    assert repr(proc) == f"<Process {proc.pid}>"
    for i in range(3):
        proc.stdin.write(b"line %d\n" % i)
        await proc.stdin.drain()
        assert await proc.stdout.readline() == b"line %d\n" % i
    proc.stdin.writelines([b"a", b"b\n"])
    assert proc.stdin.can_write_eof()
    proc.stdin.close()
    assert proc.stdin.is_closing()
    await proc.stdin.wait_closed()
    assert await proc.stdout.read() == b"ab\n"
    assert proc.stdout.at_eof()
    rc = await proc.wait()
    assert rc == 0
    assert type(rc) is int
    assert proc.returncode == 0


async def test_communicate_large_input(impl: Impl) -> None:
    data = bytes(range(256)) * (5 * 2**12 + 7)  # 5 MiB and a bit: far past any pipe buffer
    proc = await impl.exec(
        "sh", "-c", "cat; echo done >&2", stdin=impl.PIPE, stdout=impl.PIPE, stderr=impl.PIPE
    )
    out, err = await proc.communicate(data)
    assert out == data
    assert err == b"done\n"
    assert proc.returncode == 0


async def test_communicate_without_pipes(impl: Impl) -> None:
    proc = await impl.exec("true", stdout=impl.DEVNULL)
    assert await proc.communicate() == (None, None)
    assert proc.returncode == 0


async def test_communicate_stdout_only_and_twice(impl: Impl) -> None:
    proc = await impl.exec("echo", "hello", stdout=impl.PIPE)
    assert await proc.communicate() == (b"hello\n", None)
    assert await proc.communicate() == (b"", None)


async def test_stderr_to_stdout(impl: Impl) -> None:
    proc = await impl.shell("echo out; echo err >&2", stdout=impl.PIPE, stderr=impl.STDOUT)
    out, err = await proc.communicate()
    assert sorted(out.splitlines()) == [b"err", b"out"]
    assert err is None


async def test_shell(impl: Impl) -> None:
    proc = await impl.shell("echo $((6 * 7)); exit 3", stdout=impl.PIPE)
    assert await proc.communicate() == (b"42\n", None)
    assert proc.returncode == 3
    proc = await impl.shell(b"printf %s bytes", stdout=impl.PIPE)
    assert await proc.stdout.read() == b"bytes"
    assert await proc.wait() == 0


async def test_readline_over_the_limit(impl: Impl) -> None:
    # The long line arrives in one write; the next line only once we ask for it.
    script = "import sys; sys.stdout.write('x' * 100 + '\\n'); sys.stdout.flush(); "
    script += "sys.stdin.readline(); print('ok')"
    proc = await impl.exec(PY, "-c", script, stdin=impl.PIPE, stdout=impl.PIPE, limit=10)
    with pytest.raises(ValueError, match="limit"):
        await proc.stdout.readline()
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    assert await proc.stdout.readline() == b"ok\n"
    assert await proc.stdout.readline() == b""
    assert await proc.wait() == 0


async def test_readuntil_and_readexactly(impl: Impl) -> None:
    proc = await impl.exec("printf", "ab|cdef", stdout=impl.PIPE)
    assert await proc.stdout.readuntil(b"|") == b"ab|"
    assert await proc.stdout.readexactly(2) == b"cd"
    with pytest.raises(asyncio.IncompleteReadError) as info:
        await proc.stdout.readexactly(5)
    assert info.value.partial == b"ef"
    assert await proc.wait() == 0


async def test_write_to_a_child_that_exited_fails_in_drain_not_write(impl: Impl) -> None:
    proc = await impl.exec("true", stdin=impl.PIPE)
    assert await proc.wait() == 0
    if impl.is_asyncio and _on_uvloop():
        pytest.skip("uvloop's pipe transport raises RuntimeError from write() here")
    proc.stdin.write(b"x" * 2**17)  # no exception here, as asyncio
    with contextlib.suppress(ConnectionError):  # BrokenPipeError or ConnectionResetError
        await proc.stdin.drain()
    proc.stdin.close()
    await proc.stdin.wait_closed()


async def test_read_after_the_child_exited(impl: Impl) -> None:
    proc = await impl.exec("printf", "left behind", stdout=impl.PIPE)
    assert await proc.wait() == 0
    assert await proc.stdout.read() == b"left behind"


async def test_empty_input(impl: Impl) -> None:
    proc = await impl.exec("cat", stdin=impl.PIPE, stdout=impl.PIPE)
    assert await proc.communicate(b"") == (b"", None)
    assert proc.returncode == 0


async def test_files_and_paths(impl: Impl, tmp_path: Path) -> None:
    # A PathLike program, and file objects for the three streams.
    (tmp_path / "in").write_bytes(b"from a file\n")
    with (tmp_path / "in").open("rb") as fin, (tmp_path / "out").open("wb") as fout:
        proc = await impl.exec(Path("/bin/sh"), "-c", "cat; echo err >&2", stdin=fin,
                               stdout=fout, stderr=impl.STDOUT)  # fmt: skip
        assert await proc.wait() == 0
    assert (tmp_path / "out").read_bytes() == b"from a file\nerr\n"


async def test_cancel_while_spawning(impl: Impl) -> None:
    from .helpers import children_of

    if impl.is_asyncio and _on_uvloop():
        pytest.skip("uvloop reaps the child of a cancelled spawn later, at times after the test")
    before = children_of()
    task = asyncio.ensure_future(impl.exec("sleep", "60", stdout=impl.PIPE))
    await asyncio.sleep(0)  # the spawn is under way
    task.cancel()
    try:
        proc = await task
    except asyncio.CancelledError:
        pass
    else:  # the spawn won the race: nothing was cancelled
        proc.kill()
        await proc.wait()
        await proc.communicate()
    assert not children_of() - before, "a child was left behind"


# ---------------------------------------------------- the same as asyncio: signals
@pytest.mark.parametrize(
    ("method", "signum"),
    [("kill", signal.SIGKILL), ("terminate", signal.SIGTERM), ("send_signal", signal.SIGUSR1)],
)
async def test_signals(impl: Impl, method: str, signum: int) -> None:
    proc = await impl.exec("sleep", "60")
    if method == "send_signal":
        proc.send_signal(signum)
    else:
        getattr(proc, method)()
    assert await proc.wait() == -signum
    assert proc.returncode == -signum


@pytest.mark.parametrize(
    ("script", "returncode"),
    [("exit 7", 7), ("kill -TERM $$", -signal.SIGTERM), ("kill -KILL $$", -signal.SIGKILL)],
)
async def test_returncode_of_an_exited_or_signalled_child(
    impl: Impl, script: str, returncode: int
) -> None:
    proc = await impl.shell(script)
    assert await proc.wait() == returncode
    assert proc.returncode == returncode


def _signal(proc: Any, method: str) -> None:
    if method == "send_signal":
        proc.send_signal(signal.SIGUSR1)
    else:
        getattr(proc, method)()


@pytest.mark.parametrize("method", ["kill", "terminate", "send_signal"])
async def test_signal_after_wait_raises_process_lookup_error(impl: Impl, method: str) -> None:
    proc = await impl.exec("true")
    await proc.wait()
    with pytest.raises(ProcessLookupError):
        _signal(proc, method)


async def test_signal_to_a_child_that_exited_unseen_is_silent(impl: Impl) -> None:
    # The child has exited, but the loop has not run since: returncode is
    # still None, and code that checks it before kill() must not get an error.
    proc = await impl.exec("true")
    with contextlib.suppress(ChildProcessError):  # asyncio's watcher thread may reap first
        # Blocks only until the child's exit, a moment; a zombie from then on.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # noqa: ASYNC222
    if proc.returncode is None:  # uvloop's asyncio processes may know already
        proc.kill()
        proc.terminate()
        proc.send_signal(signal.SIGUSR1)
    await proc.wait()


async def test_cancel_communicate(impl: Impl) -> None:
    proc = await impl.exec(
        PY, "-c", "import time; print('up', flush=True); time.sleep(60)",
        stdin=impl.PIPE, stdout=impl.PIPE,
    )  # fmt: skip
    assert await proc.stdout.readline() == b"up\n"
    task = asyncio.ensure_future(proc.communicate(b"input"))
    await asyncio.sleep(0)  # let it start writing and reading
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert proc.returncode is None  # cancelling communicate() leaves the child running
    proc.kill()
    assert await proc.wait() == -signal.SIGKILL


async def test_cancel_wait(impl: Impl) -> None:
    proc = await impl.exec("sleep", "60")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(proc.wait(), 0.05)
    assert proc.returncode is None
    proc.kill()
    assert await proc.wait() == -signal.SIGKILL


async def test_concurrent_waits(impl: Impl) -> None:
    proc = await impl.shell("exit 5")
    assert await asyncio.gather(proc.wait(), proc.wait(), proc.wait()) == [5, 5, 5]


# ------------------------------------------------- the same as asyncio: arguments
async def test_cwd_env_and_new_session(impl: Impl, tmp_path: Path) -> None:
    script = "import os; print(os.getcwd()); print(os.environ['FOO']); print(os.getsid(0))"
    proc = await impl.exec(
        PY, "-c", script, stdout=impl.PIPE, cwd=tmp_path,
        env={"FOO": "bar", "PATH": os.environ.get("PATH", "")}, start_new_session=True,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert out.decode().split() == [str(tmp_path), "bar", str(proc.pid)]


async def test_program_not_found(impl: Impl, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await impl.exec(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError):
        await impl.exec("true", cwd=tmp_path / "missing")


@pytest.mark.parametrize(
    "kwds",
    [
        {"universal_newlines": True},
        {"text": True},
        {"encoding": "utf-8"},
        {"errors": "strict"},
        {"bufsize": 1},
        {"shell": True},
    ],
)
async def test_rejected_like_asyncio(impl: Impl, kwds: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwds))):
        await impl.exec("true", **kwds)
    if "shell" not in kwds:
        with pytest.raises(ValueError, match=next(iter(kwds))):
            await impl.shell("true", **kwds)


async def test_close_fds_false_keeps_inheritable_descriptors(impl: Impl) -> None:
    # compat used to refuse close_fds=False (6 of CPython's own asyncio
    # subprocess tests pass it).
    r, w = os.pipe()
    os.set_inheritable(w, True)
    try:
        script = "import os, sys; os.write(int(sys.argv[1]), b'inherited')"
        proc = await impl.exec(PY, "-c", script, str(w), close_fds=False)
        assert await proc.wait() == 0
        assert os.read(r, 100) == b"inherited"
        if impl.is_asyncio and _on_uvloop():
            return  # uvloop's own spawn leaves an inheritable descriptor open with close_fds=True
        proc = await impl.exec(PY, "-c", script, str(w), close_fds=True, stderr=impl.DEVNULL)
        assert await proc.wait() == 1  # EBADF: closed in the child
    finally:
        os.close(r)
        os.close(w)


# ------------------------------------------------------------------- compat only
async def test_dropped_process_keeps_its_child_running(compat_only: Impl) -> None:
    # asyncio keeps a child it started (and reaps it) after the program drops
    # its Process: fire and forget. A dropped aioproc.Process kills its child,
    # so compat keeps it until the exit. The child answers on a socket once
    # asked, so it must still be alive after the drop.
    ours, theirs = socket.socketpair()
    with ours, theirs:
        script = "import os, sys; fd = int(sys.argv[1]); os.read(fd, 1); os.write(fd, b'alive')"
        proc = await compat.create_subprocess_exec(
            PY, "-c", script, str(theirs.fileno()), pass_fds=[theirs.fileno()]
        )
        pid = proc.pid
        del proc
        gc.collect()
        ours.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(ours, b"?")
        assert await loop.sock_recv(ours, 5) == b"alive"
    # And it is reaped without anybody waiting for it.
    (task,) = [t for t in compat._waiting if t.get_name() == f"aioproc.compat: pid {pid}"]
    assert await task == 0


@pytest.mark.parametrize("method", ["kill", "terminate", "send_signal"])
async def test_signal_after_communicate_raises_process_lookup_error(
    compat_only: Impl, method: str
) -> None:
    # asyncio's default loop raises here or silently does nothing, depending on
    # whether it saw the exit before the end of the pipes.
    proc = await compat.create_subprocess_exec("true", stdout=compat.PIPE, stderr=compat.PIPE)
    assert await proc.communicate() == (b"", b"")
    with pytest.raises(ProcessLookupError):
        _signal(proc, method)


async def test_refused_popen_options(compat_only: Impl) -> None:
    # asyncio hands these to subprocess.Popen; aioproc has no equivalent and
    # says so rather than ignoring them.
    for kwds in (
        {"preexec_fn": os.getpid},
        {"executable": "/bin/sh"},
        {"extra_groups": [0]},
        {"pipesize": 2**20},
        {"restore_signals": False},
    ):
        with pytest.raises(ValueError, match=next(iter(kwds))):
            await compat.create_subprocess_exec("true", **kwds)
    with pytest.raises(TypeError, match="no_such_option"):
        await compat.create_subprocess_exec("true", no_such_option=1)
    with pytest.raises(ValueError, match="cmd must be a string"):
        await compat.create_subprocess_shell(["true"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shell must be True"):
        await compat.create_subprocess_shell("true", shell=False)
    # Their defaults, spelled out, are fine.
    proc = await compat.create_subprocess_exec(
        "true", close_fds=True, preexec_fn=None, restore_signals=True, bufsize=0, shell=False,
        universal_newlines=False, text=None, encoding=None, errors=None, pass_fds=iter(()),
    )  # fmt: skip
    assert await proc.wait() == 0


async def test_wait_returns_while_a_grandchild_holds_the_pipes(compat_only: Impl) -> None:
    # asyncio's default loop waits for the pipes to close too (3.11.7+, 3.12.1+),
    # so its wait() hangs here until the grandchild exits.
    proc = await compat.create_subprocess_exec(
        "sh", "-c", "exec 3<&0; cat <&3 3<&- & echo started", stdin=compat.PIPE, stdout=compat.PIPE
    )
    assert await proc.stdout.readline() == b"started\n"
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    # The grandchild (cat) still holds both pipes, and they still work.
    proc.stdin.write(b"still here\n")
    await proc.stdin.drain()
    assert await proc.stdout.readline() == b"still here\n"
    proc.stdin.close()
    assert await proc.stdout.read() == b""


async def test_kill_racing_the_exit_keeps_the_status(compat_only: Impl) -> None:
    # On 3.10/3.11's default loop, kill() on a child that has just exited can
    # reap it in subprocess.Popen.poll(), behind the child watcher's back:
    # wait() then returns 255 and logs "Unknown child process pid".
    for _ in range(10):
        proc = await compat.create_subprocess_exec("sh", "-c", "exit 3")
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # noqa: ASYNC222
        assert proc.returncode is None
        proc.kill()
        assert await proc.wait() == 3
        assert proc.status is not None
        assert proc.status.exit_code == 3


async def test_communicate_input_to_a_child_that_exited(compat_only: Impl) -> None:
    # uvloop's own pipes raise RuntimeError("... the handler is closed") here on 3.11.
    proc = await compat.create_subprocess_exec("true", stdin=compat.PIPE, stdout=compat.PIPE)
    await proc.wait()
    assert await proc.communicate(b"x" * 2**20) == (b"", None)


async def test_input_without_a_stdin_pipe_is_ignored(compat_only: Impl) -> None:
    # As asyncio 3.13 (3.10-3.12 raise AttributeError on None.write).
    proc = await compat.create_subprocess_exec("cat", stdout=compat.PIPE, stdin=compat.DEVNULL)
    assert await proc.communicate(b"ignored") == (b"", None)
    proc = await compat.create_subprocess_exec("cat", stdin=compat.PIPE, stdout=compat.PIPE)
    proc.stdin.close()
    assert await proc.communicate(b"ignored") == (b"", None)


async def test_write_after_close_is_dropped(compat_only: Impl) -> None:
    proc = await compat.create_subprocess_exec("cat", stdin=compat.PIPE, stdout=compat.PIPE)
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(b"kept\n")
    proc.stdin.close()
    proc.stdin.write(b"dropped\n")  # asyncio drops it silently too
    await proc.stdin.drain()
    with pytest.raises(TypeError):
        proc.stdin.write("text")  # type: ignore[arg-type]
    assert await proc.stdout.read() == b"kept\n"
    assert await proc.wait() == 0


async def test_broken_pipe_is_reported_by_drain(compat_only: Impl) -> None:
    proc = await compat.create_subprocess_exec("true", stdin=compat.PIPE)
    await proc.wait()
    assert proc.stdin is not None
    proc.stdin.write(b"x")
    assert proc.stdin.is_closing()
    with pytest.raises(BrokenPipeError):
        await proc.stdin.drain()
    proc.stdin.write(b"x")  # dropped, as asyncio's default loop does


async def test_the_core_process_is_there(compat_only: Impl) -> None:
    proc = await compat.create_subprocess_exec("sh", "-c", "exit 4")
    assert isinstance(proc.process, aioproc.Process)
    assert proc.status is None or proc.status.exit_code == 4
    assert await proc.wait() == 4
    assert proc.status is not None
    assert proc.status.exit_code == 4
    assert isinstance(proc.process.stdout, type(None))


# ------------------------------------------- an asyncio.subprocess.Process, for real
async def test_process_and_streams_are_asyncios_types(compat_only: Impl) -> None:
    # Code that checks isinstance(p, asyncio.subprocess.Process) (or its
    # streams' types) takes compat's process; it used to be refused.
    proc = await compat.create_subprocess_exec(
        "cat", stdin=compat.PIPE, stdout=compat.PIPE, stderr=compat.PIPE
    )
    assert isinstance(proc, asyncio.subprocess.Process)
    assert isinstance(proc.stdin, asyncio.StreamWriter)
    assert isinstance(proc.stdout, asyncio.StreamReader)
    assert isinstance(proc.stderr, asyncio.StreamReader)
    # What needs a transport says there is none, instead of failing inside asyncio.
    assert not hasattr(proc.stdin, "transport")
    assert proc.stdin.get_extra_info("pipe", "none") == "none"
    with pytest.raises(NotImplementedError):
        await proc.stdin.start_tls(None)  # type: ignore[arg-type]
    for call in (
        lambda: proc.stdout.feed_data(b"x"),
        proc.stdout.feed_eof,
        lambda: proc.stdout.set_exception(ValueError()),
        lambda: proc.stdout.set_transport(None),  # type: ignore[arg-type]
    ):
        with pytest.raises(RuntimeError, match="no protocol feeds it"):
            call()
    assert proc.stdout.exception() is None
    # The reading methods are the ProcessReader's, anyio's receive() included.
    proc.stdin.write(b"ab|cd\nrest")
    proc.stdin.close()
    assert await proc.stdout.readuntil(memoryview(b"|")) == b"ab|"
    with pytest.raises(TypeError, match="tuple"):
        await proc.stdout.readuntil((b"x", b"y"))
    assert [line async for line in proc.stdout] == [b"cd\n", b"rest"]
    assert proc.stdout.at_eof()
    assert isinstance(proc.stdout.reader, aioproc.ProcessReader)
    assert "ProcessReader" in repr(proc.stdout)
    with pytest.raises(anyio.EndOfStream):
        await proc.stdout.receive()
    assert await proc.communicate(bytearray(b"ignored")) == (b"", b"")
    assert await proc.wait() == 0
    await proc.stdout.aclose()
    assert proc.stdout.reader.closed
    with pytest.raises(TypeError):
        compat.StreamReader()


@pytest.mark.parametrize(
    ("ours", "base", "inherited_private"),
    [
        # Called only by the base's communicate(), which is overridden.
        (compat.Process, asyncio.subprocess.Process, {"_feed_stdin", "_noop", "_read_stream"}),
        (compat.StreamWriter, asyncio.StreamWriter, set()),
        # Called only by the base's reading and feeding methods, all overridden.
        (
            compat.StreamReader,
            asyncio.StreamReader,
            {"_wakeup_waiter", "_maybe_resume_transport", "_wait_for_data"},
        ),
    ],
)
def test_subclasses_override_everything_that_needs_a_transport(
    ours: type, base: type, inherited_private: set[str]
) -> None:
    # The subclasses never run asyncio's __init__, so any base method they
    # inherit would fail on a missing transport. On this Python every public
    # method and property of the base (and __repr__, __del__, async
    # iteration) is overridden; a method a later Python adds fails here
    # instead of being inherited broken.
    inherited = set()
    for name, value in vars(base).items():
        if name in ("__init__", "__dict__", "__weakref__", "__module__", "__doc__"):
            continue
        if name.startswith("__") and name not in ("__repr__", "__del__", "__aiter__", "__anext__"):
            continue
        if not (callable(value) or isinstance(value, property)):
            continue
        if name not in vars(ours):
            inherited.add(name)
    assert inherited <= inherited_private, f"inherited from {base.__qualname__}: {inherited}"


def test_a_type_checker_takes_compat_for_asyncio(tmp_path: Path) -> None:
    # mypy --strict on code annotated with asyncio's types, given compat's
    # objects (it used to report three incompatible types).
    pytest.importorskip("mypy")
    code = textwrap.dedent(
        """
        import asyncio
        import asyncio.subprocess

        from aioproc import compat


        async def start(cmd: str) -> asyncio.subprocess.Process:
            proc = await compat.create_subprocess_exec(cmd, stdin=compat.PIPE, stdout=compat.PIPE)
            reader: asyncio.StreamReader | None = proc.stdout
            writer: asyncio.StreamWriter | None = proc.stdin
            assert reader is not None and writer is not None
            return proc
        """
    )
    (tmp_path / "uses_asyncio_types.py").write_text(code)
    result = subprocess.run(
        [PY, "-m", "mypy", "--strict", "--no-incremental", "uses_asyncio_types.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        # An editable install's import hook is not something mypy follows.
        env={**os.environ, "MYPYPATH": str(Path(aioproc.__file__).parent.parent)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def _run_script(code: str, loop: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-X", "dev", "-W", "error", "-c", textwrap.dedent(code), loop],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_no_noise_and_no_orphan_when_the_loop_ends_first(loop: str) -> None:
    # asyncio prints "Event loop is closed" and ResourceWarnings here (3.13),
    # or leaves the children running as orphans (3.11).
    result = _run_script(
        """
        import asyncio, sys
        from aioproc import compat

        kept = []

        async def main():
            p = await compat.create_subprocess_exec("sleep", "60", stdout=compat.PIPE)
            kept.append(p)  # still referenced when the loop closes
            q = await compat.create_subprocess_exec("sleep", "60", stdin=compat.PIPE)
            print(p.pid, q.pid, flush=True)  # q is dropped while running

        if sys.argv[1] == "uvloop":
            import uvloop
            uvloop.run(main())
        else:
            asyncio.run(main())
        """,
        loop,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    for pid in map(int, result.stdout.split()):
        assert process_state(pid) is None, f"child {pid} outlived the program"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_no_noise_when_the_loop_is_closed_by_hand(loop: str) -> None:
    # No asyncio.run(): the loop is closed without cancelling its tasks.
    result = _run_script(
        """
        import asyncio, sys
        from aioproc import compat

        async def main():
            p = await compat.create_subprocess_exec("sleep", "60")
            print(p.pid, flush=True)

        if sys.argv[1] == "uvloop":
            import uvloop
            loop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        loop.run_until_complete(main())
        loop.close()
        """,
        loop,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert process_state(int(result.stdout)) is None

"""Bad input, generated: spawn's arguments and the signal numbers, under hypothesis.

Every call must either spawn a child and reap it cleanly or raise one of the
documented exceptions (``aioproc/_exceptions.py``): TypeError/ValueError for
bad arguments (before anything is created), an OSError subclass from the
fork/exec step, ProcessLookupError for a signal to a finished child. After
every example the descriptors and children of this process are what they were.
Where the child runs, it reports what it got, which must be what we passed.

Each property runs on asyncio and uvloop, in pidfd and pid mode, one event
loop per example (hypothesis drives a synchronous test; see ``run``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import os
import signal
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import aioproc
from aioproc import DEVNULL, PIPE, STDOUT

from .helpers import children_of
from .test_faults import really_open_fds

EMPTY_DIR = tempfile.mkdtemp(prefix="aioproc-fuzz-")  # removed at exit (atexit below)
atexit.register(os.rmdir, EMPTY_DIR)

pytestmark = pytest.mark.usefixtures("no_leaks")

# A few seconds per property; the no_leaks fixture checks the whole test, the
# examples check themselves (see run()).
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
loops_and_modes = pytest.mark.parametrize(
    ("loop_name", "mode"), [(lp, m) for lp in LOOPS for m in ("pidfd", "pid")]
)

#: What spawn and send_signal may raise (OSError covers FileNotFoundError,
#: PermissionError, NotADirectoryError, ProcessLookupError, BlockingIOError...).
DOCUMENTED = (TypeError, ValueError, OSError)


@contextlib.contextmanager
def nothing_left_behind() -> Iterator[None]:
    fds = really_open_fds()
    children = children_of()
    yield
    assert children_of() == children, "a child was left behind"
    assert really_open_fds() == fds, "a descriptor was left open"


def run(loop_name: str, mode: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main()`` in a fresh loop (closed properly), checking for leaks."""
    aioproc.set_wait_mode(mode)  # type: ignore[arg-type]
    try:
        with nothing_left_behind():
            loop = LOOPS[loop_name]()
            try:
                loop.run_until_complete(main())
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()
    finally:
        aioproc.set_wait_mode("auto")


async def spawn_or_raise(
    argv: Any, **kwargs: Any
) -> tuple[bytes | None, aioproc.ExitStatus | None]:
    """Spawn and communicate; None, None when spawn raised a documented exception."""
    try:
        proc = await aioproc.spawn(argv, **kwargs)
    except DOCUMENTED as exc:
        event(f"refused: {type(exc).__name__}")
        return None, None
    event("spawned")
    async with proc:
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.status is not None
    return out, proc.status


# ------------------------------------------------------------------ strategies
# Strings: any code point, surrogates included (lone ones cannot be encoded:
# ValueError), NUL included (ValueError), and what os.fsdecode makes of
# arbitrary bytes (non-UTF-8, round-tripping through surrogateescape).
any_text = st.text(max_size=40)
any_bytes = st.binary(max_size=40)
decoded_bytes = any_bytes.map(os.fsdecode)
# Past MAX_ARG_STRLEN (128 KiB) exec fails with E2BIG.
long_arg = st.sampled_from([100_000, 131_071, 131_072, 200_000]).map(lambda n: b"a" * n)
# NUL (refused), a surrogate-escaped byte (fine: b"\xff"), a lone surrogate (refused).
nasty = st.sampled_from(["a\0b", b"\0", "\udcff", "\ud800", "é", "\n", " "])
an_arg = st.one_of(any_text, any_bytes, decoded_bytes, long_arg, nasty, st.just(""))
not_an_arg = st.one_of(st.integers(), st.none(), st.floats(), st.lists(st.integers(), max_size=2))


def fs_bytes(arg: str | bytes) -> bytes:
    return arg if isinstance(arg, bytes) else os.fsencode(arg)


def encodable(arg: str | bytes) -> bool:
    try:
        return b"\0" not in fs_bytes(arg)
    except UnicodeEncodeError:
        return False


# -------------------------------------------------------------------- argv
@loops_and_modes
@FUZZ
@given(
    args=st.one_of(
        st.lists(an_arg, max_size=5), st.lists(st.one_of(an_arg, not_an_arg), max_size=3)
    ),
    bytes_program=st.booleans(),
)
def test_argv_reaches_the_child_exactly(
    loop_name: str, mode: str, args: list[Any], bytes_program: bool
) -> None:
    # printf '%s\0' ARGS... writes each argument back, NUL-terminated.
    program: str | bytes = b"/usr/bin/printf" if bytes_program else "/usr/bin/printf"
    argv = [program, "%s\\0", "first", *args]  # printf with no argument still prints once
    valid = all(isinstance(a, (str, bytes)) and encodable(a) for a in args)
    too_long = any(len(fs_bytes(a)) >= 131_072 for a in args if valid)

    async def main() -> None:
        out, status = await spawn_or_raise(argv, stdout=PIPE)
        if not valid or too_long:
            assert status is None, f"{argv!r} should have been refused"
            return
        assert status is not None
        assert status.success
        assert out == b"first\0" + b"".join(fs_bytes(a) + b"\0" for a in args)

    run(loop_name, mode, main)


@loops_and_modes
@FUZZ
@given(program=st.one_of(an_arg, not_an_arg))
def test_any_program_name_is_refused_clearly(loop_name: str, mode: str, program: Any) -> None:
    # Random names must not run real programs (we are root): the child's PATH
    # and working directory are an empty directory, so no name resolves to one.
    async def main() -> None:
        error: BaseException | None = None
        try:
            proc = await aioproc.spawn(
                [program], env={"PATH": EMPTY_DIR}, cwd=EMPTY_DIR, stdout=DEVNULL, stderr=DEVNULL
            )
        except DOCUMENTED as exc:
            event(f"refused: {type(exc).__name__}")
            error = exc
        else:
            # An absolute path to a real program, by an extraordinary draw: stop it.
            await proc.stop(timeout=1)
            return
        if isinstance(error, OSError):
            assert error.errno in (
                errno.ENOENT, errno.EACCES, errno.ENOTDIR, errno.ENAMETOOLONG,
                errno.E2BIG, errno.EISDIR, errno.ELOOP,
            ), error  # fmt: skip
            if error.errno == errno.ENOENT:
                assert error.filename == os.fsdecode(program)

    run(loop_name, mode, main)


# --------------------------------------------------------------------- env
env_key = st.one_of(any_text, any_bytes, decoded_bytes)
env_value = st.one_of(any_text, any_bytes, decoded_bytes)


@loops_and_modes
@FUZZ
@given(
    env=st.one_of(
        st.dictionaries(env_key, env_value, max_size=6),
        st.dictionaries(env_key, st.one_of(env_value, not_an_arg), max_size=3),
        st.dictionaries(st.one_of(env_key, st.integers()), env_value, max_size=3),
    )
)
def test_env_reaches_the_child_exactly(loop_name: str, mode: str, env: dict[Any, Any]) -> None:
    # env -0 prints its environment, NUL-separated, in order.
    def valid_entry(key: Any, value: Any) -> bool:
        return (
            isinstance(key, (str, bytes))
            and isinstance(value, (str, bytes))
            and encodable(key)
            and encodable(value)
            and fs_bytes(key) != b""
            and b"=" not in fs_bytes(key)
        )

    valid = all(valid_entry(k, v) for k, v in env.items())

    async def main() -> None:
        out, status = await spawn_or_raise(["/usr/bin/env", "-0"], env=env, stdout=PIPE)
        if not valid:
            assert status is None, f"env {env!r} should have been refused"
            return
        assert status is not None
        assert status.success
        assert out == b"".join(fs_bytes(k) + b"=" + fs_bytes(v) + b"\0" for k, v in env.items())

    run(loop_name, mode, main)


# --------------------------------------------------------------------- cwd
existing_dirs: st.SearchStrategy[str | bytes] = st.sampled_from(
    ["/", "/tmp", "/usr/bin", ".", "..", "tests", b"/etc"]
)
not_dirs = st.sampled_from(["/etc/hostname", "/dev/null", "/nonexistent", "", "/" + "x" * 5000])
cwd_values = st.one_of(
    existing_dirs, not_dirs, an_arg, not_an_arg, existing_dirs.map(lambda d: Path(os.fsdecode(d)))
)


@loops_and_modes
@FUZZ
@given(cwd=cwd_values)
def test_cwd_is_used_or_refused(loop_name: str, mode: str, cwd: Any) -> None:
    async def main() -> None:
        out, status = await spawn_or_raise(["/bin/pwd", "-P"], cwd=cwd, stdout=PIPE)
        if status is None:
            return
        assert status.success
        expected = os.path.realpath(b"." if cwd is None else os.fsencode(cwd))  # noqa: ASYNC240
        assert out == expected + b"\n"

    run(loop_name, mode, main)


@loops_and_modes
def test_cwd_errors_name_the_directory(loop_name: str, mode: str) -> None:
    async def main() -> None:
        for cwd, exc in [("/nonexistent-xyz", FileNotFoundError), ("/etc/hostname", OSError)]:
            with pytest.raises(exc, match=cwd):
                await aioproc.spawn(["true"], cwd=cwd)

    run(loop_name, mode, main)


# ----------------------------------------------------------- stdin/stdout fds
redirect = st.one_of(
    st.sampled_from([None, PIPE, DEVNULL, STDOUT, 0, 1, 2, "pipe-read", "pipe-write", "file"]),
    st.integers(min_value=-10, max_value=70_000),
    st.sampled_from([1.0, "1", True, False, b"0", object()]),
)


@loops_and_modes
@FUZZ
@given(stdin=redirect, stdout=redirect, stderr=redirect)
def test_any_stdio_spawns_or_raises(
    loop_name: str, mode: str, stdin: Any, stdout: Any, stderr: Any
) -> None:
    async def main() -> None:
        read_end, write_end = os.pipe()
        devnull = open(os.devnull, "w+b")  # noqa: SIM115 - closed below
        named = {"pipe-read": read_end, "pipe-write": write_end, "file": devnull}
        try:
            kwargs: dict[str, Any] = {
                name: named.get(value, value) if isinstance(value, str) else value
                for name, value in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr))
            }
            try:
                proc = await aioproc.spawn(["true"], **kwargs)
            except DOCUMENTED as exc:
                event(f"refused: {type(exc).__name__}")
                return
            event("spawned")
            async with proc:
                status = await asyncio.wait_for(proc.wait(), 30)
            assert status.success
        finally:
            devnull.close()
            os.close(read_end)
            os.close(write_end)

    run(loop_name, mode, main)


# ----------------------------------------------------------------- signals
signal_number = st.one_of(
    st.integers(min_value=-3, max_value=signal.NSIG + 2),
    st.sampled_from(list(signal.Signals)),
    st.sampled_from([2**31, -(2**31), 2**64, True, False, 1.0, None, "SIGTERM"]),
)


def valid_signal(sig: Any, allow_zero: bool) -> bool:
    return (
        isinstance(sig, int)
        and not isinstance(sig, bool)
        and (0 if allow_zero else 1) <= sig < signal.NSIG
    )


@loops_and_modes
@FUZZ
@given(stop_signal=signal_number, signals=st.lists(signal_number, max_size=6))
def test_any_signal_number_is_sent_or_refused(
    loop_name: str, mode: str, stop_signal: Any, signals: list[Any]
) -> None:
    async def main() -> None:
        try:
            proc = await aioproc.spawn(["sleep", "30"], stop_signal=stop_signal, stop_timeout=0.1)
        except (TypeError, ValueError):
            assert not valid_signal(stop_signal, allow_zero=False)
            return
        assert valid_signal(stop_signal, allow_zero=False)
        async with proc:
            for sig in signals:
                try:
                    proc.send_signal(sig)
                except (TypeError, ValueError) as exc:
                    event(f"send_signal: {type(exc).__name__}")
                    assert not valid_signal(sig, allow_zero=True)
                except ProcessLookupError:
                    # A signal sent earlier ended the child.
                    event("send_signal: ProcessLookupError")
                    assert valid_signal(sig, allow_zero=True)
                else:
                    event("send_signal: sent")
                    assert valid_signal(sig, allow_zero=True)
                    if sig in (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
                        with contextlib.suppress(ProcessLookupError):
                            proc.send_signal(signal.SIGCONT)
        # Left the block: stopped (stop_signal, then SIGKILL) and reaped.
        assert proc.status is not None

    run(loop_name, mode, main)

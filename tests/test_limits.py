"""Tests for aioproc._limits and ``rlimits=``: checked before the spawn, set in the child.

The limits are read back from the child's own ``/proc/self/limits`` on both
fork/exec paths (the C step, and the ``_posixsubprocess`` fallback); a fork
bomb is held by ``nproc`` (as a uid of its own: root ignores RLIMIT_NPROC) and
a memory hog by ``as``.
"""

from __future__ import annotations

import errno
import os
import resource
import sys

import pytest

import aioproc
from aioproc._limits import INFINITY, check_rlimits
from aioproc._spawn import _direct, _spec

from .helpers import children_of

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]

PY = sys.executable

try:
    from aioproc import _clone_exec as ce
except ImportError:  # pragma: no cover
    ce = None


@pytest.fixture(params=["c", "fallback"])
def spawn_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test through the C step, then through the _posixsubprocess fallback."""
    if request.param == "c":
        if ce is None:
            pytest.skip("aioproc._clone_exec is not built")
        monkeypatch.setattr(_direct, "_clone_exec", ce)
    else:
        monkeypatch.setattr(_direct, "_clone_exec", None)
    return str(request.param)


def limits_of(text: str) -> dict[str, tuple[str, str]]:
    """/proc/PID/limits as {"Max open files": (soft, hard)}."""
    out = {}
    for line in text.splitlines()[1:]:
        name = line[:26].strip()
        soft, hard = line[26:].split()[:2]
        out[name] = (soft, hard)
    return out


# ------------------------------------------------------------------ checking
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (100, (100, 100)),
        ((10, 20), (10, 20)),
        ([10, None], (10, INFINITY)),
        ("infinity", (INFINITY, INFINITY)),
        (None, (INFINITY, INFINITY)),
        ((0, "unlimited"), (0, INFINITY)),
    ],
)
def test_values(value: object, expected: tuple[int, int]) -> None:
    assert check_rlimits({"core": value}) == ((resource.RLIMIT_CORE, *expected),)


@pytest.mark.parametrize(
    ("rlimits", "error", "match"),
    [
        ({"bogus": 1}, ValueError, r"unknown limit 'bogus' \(known: as, core, cpu"),
        ({"nofile": -1}, ValueError, "negative"),
        ({"nofile": (20, 10)}, ValueError, "soft limit 20 is above the hard limit 10"),
        ({"nofile": (None, 10)}, ValueError, "soft limit infinity is above"),
        ({"as": 2**64}, ValueError, "too large"),
        ({"as": 10**30}, ValueError, "too large"),
        ({"nofile": 2**40}, ValueError, "fs.nr_open"),
        ({"core": (1, 2, 3)}, ValueError, "2 items"),
        ({"core": True}, TypeError, "not a limit"),
        ({"core": 1.5}, TypeError, "not a limit"),
        ({"core": "lots"}, TypeError, "not a limit"),
        ({"CORE": 1, "core": 2}, ValueError, "same limit"),
        ({1: 1}, TypeError, "strings"),
        ([("core", 1)], TypeError, "mapping"),
    ],
)
async def test_bad_rlimits_raise_before_anything_is_spawned(
    rlimits: object, error: type[Exception], match: str
) -> None:
    before = children_of()
    with pytest.raises(error, match=match):
        await aioproc.spawn([PY, "-c", "pass"], rlimits=rlimits)  # type: ignore[arg-type]
    assert children_of() == before


def test_raising_a_hard_limit_needs_cap_sys_resource() -> None:
    # In a child that gave up root: the check refuses what the kernel would.
    from .helpers import DROP_ROOT, run_python

    code = (
        "import os, resource\n"
        "from aioproc._limits import check_rlimits\n"
        + DROP_ROOT.replace("\n    ", "\n")
        + "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
        "assert check_rlimits({'core': 0})\n"
        "try:\n"
        "    check_rlimits({'core': 1})\n"
        "except PermissionError as exc:\n"
        "    print(exc)\n"
    )
    out = run_python(code)
    assert "raising a hard limit needs CAP_SYS_RESOURCE" in out.stdout, out.stderr


# ------------------------------------------------------------------ applying
async def test_limits_are_set_in_the_child(spawn_path: str) -> None:
    result = await aioproc.run(
        ["cat", "/proc/self/limits"],
        capture_output=True,
        check=True,
        rlimits={"nofile": (100, 200), "core": 0, "cpu": (30, None), "fsize": "infinity"},
    )
    limits = limits_of(result.stdout.decode())
    assert limits["Max open files"] == ("100", "200")
    assert limits["Max core file size"] == ("0", "0")
    assert limits["Max cpu time"] == ("30", "unlimited")
    assert limits["Max file size"] == ("unlimited", "unlimited")
    # Ours are untouched.
    assert resource.getrlimit(resource.RLIMIT_NOFILE) != (100, 200)


async def test_limits_with_a_user_change(spawn_path: str) -> None:
    # The user change goes to the fallback; the limits are set first, with
    # our privileges, then the user changes.
    uid = 3_000_000 + os.getpid()
    result = await aioproc.run(
        ["sh", "-c", "id -u; cat /proc/self/limits"],
        capture_output=True,
        check=True,
        cwd="/",
        user=uid,
        group=uid,
        rlimits={"nofile": (64, 128), "core": 0},
    )
    first, _, rest = result.stdout.decode().partition("\n")
    assert int(first) == uid
    limits = limits_of(rest)
    assert limits["Max open files"] == ("64", "128")
    assert limits["Max core file size"] == ("0", "0")


@pytest.mark.parametrize("mode", ["pidfd", "pid"])
def test_a_limit_the_kernel_refuses_is_reported(spawn_path: str, mode: str) -> None:
    # Past the checks (the spec is altered by hand): the child fails before
    # its exec, the error says which step, and nothing is left.
    spec = _spec.make_spec(
        ["true"], stdin=None, stdout=None, stderr=None, cwd=None, env=None, shell=False,
        start_new_session=False, process_group=None, pass_fds=(), user=None, group=None,
        umask=-1,
    )  # fmt: skip
    spec = spec._replace(rlimits=((resource.RLIMIT_NOFILE, 2**40, 2**40),))
    before = children_of()
    with pytest.raises(OSError, match="cannot set the resource limits") as info:
        _direct.spawn_sync(spec, mode)  # type: ignore[arg-type]
    assert info.value.errno == errno.EPERM
    assert children_of() == before


# The shell, not Python: the interpreter under test may not be readable by
# another uid. dash gives up ("Cannot fork", status 2) at the first refused
# fork; the sleeps it started are swept with its group (kill_group=True).
FORK_BOMB = "i=0; while [ $i -lt 100 ]; do sleep 30 >/dev/null 2>&1 & i=$((i+1)); echo $i; done"


async def test_a_fork_bomb_is_held_by_nproc(spawn_path: str) -> None:
    # A uid of its own, so the count is this test's processes only; root
    # would ignore the limit. Without the limit all 100 forks succeed.
    uid = 3_000_000 + os.getpid()
    result = await aioproc.run(
        ["sh", "-c", FORK_BOMB],
        capture_output=True,
        cwd="/",
        user=uid,
        group=uid,
        kill_group=True,
        timeout=30,
        rlimits={"nproc": 10},
    )
    forked = result.stdout.split()
    assert len(forked) <= 9, result.stdout  # the bomb itself is the tenth
    assert result.returncode != 0
    assert b"fork" in result.stderr.lower(), result.stderr


async def test_a_memory_hog_is_stopped_by_as(spawn_path: str) -> None:
    hog = "b = bytearray(512 * 1024 * 1024); print('allocated')"
    result = await aioproc.run(
        [PY, "-c", hog], capture_output=True, timeout=30, rlimits={"as": 256 * 1024 * 1024}
    )
    assert result.returncode == 1
    assert b"MemoryError" in result.stderr
    assert b"allocated" not in result.stdout

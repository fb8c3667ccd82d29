"""Tests for aioproc._cgroup and ``spawn(cgroup=...)``: containment with cgroup v2.

The cgroup2 mount is found in /proc/self/mountinfo (never assumed). Placement is
checked in the child's own /proc/self/cgroup on both fork/exec paths and in both
wait modes; a ``setsid`` double-forking child deaf to SIGTERM is stopped whole;
the cgroup.kill fallback and the "no cgroup v2" fallback are forced by switches.
Limits need delegated controllers: tested where they are, else the error naming
the missing controller is.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import sys
from collections.abc import Iterator

import pytest

import aioproc
from aioproc import PIPE, _cgroup
from aioproc._spawn import _direct

from .helpers import children_of, group_members, process_state

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]

ROOT, WHY = _cgroup.cgroup_root()
needs_cgroup = pytest.mark.skipif(ROOT is None, reason=f"no writable cgroup v2: {WHY}")

try:
    from aioproc import _clone_exec as ce
except ImportError:  # pragma: no cover
    ce = None


def available(controller: str) -> str | None:
    """None if ``controller`` can be used below our cgroup, else why not."""
    if ROOT is None:
        return f"no writable cgroup v2: {WHY}"
    with open(os.path.join(ROOT, "cgroup.controllers")) as f:
        listed = f.read().split()
    if controller in listed:
        return None
    return f"the {controller} controller is not delegated to {ROOT} (cgroup.controllers: {listed})"


def ours_left() -> list[str]:
    """Cgroups this test process made that still exist."""
    if ROOT is None:
        return []
    prefix = f"aioproc-{os.getpid()}-"
    return [d for d in os.listdir(ROOT) if d.startswith(prefix)]


def dead(pid: int) -> bool:
    return process_state(pid) in (None, "Z")


def gone(path: str) -> bool:
    return not os.path.exists(path)


def relative(path: str) -> str:
    assert ROOT is not None
    return os.path.relpath(path, ROOT)


@pytest.fixture(params=["c", "fallback"])
def spawn_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "c":
        if ce is None:
            pytest.skip("aioproc._clone_exec is not built")
        monkeypatch.setattr(_direct, "_clone_exec", ce)
    else:
        monkeypatch.setattr(_direct, "_clone_exec", None)
    return str(request.param)


@pytest.fixture
def no_cgroup_kill() -> Iterator[None]:
    _cgroup.use_cgroup_kill = False
    try:
        yield
    finally:
        _cgroup.use_cgroup_kill = True


# ------------------------------------------------------------------ finding it
@needs_cgroup
def test_the_hierarchy_comes_from_mountinfo() -> None:
    assert ROOT is not None
    with open("/proc/self/mountinfo") as f:
        points = [
            line.split(" - ")[0].split()[4]
            for line in f
            if line.split(" - ")[1].startswith("cgroup2 ")
        ]
    assert any(p == ROOT or ROOT.startswith(p + "/") for p in points), (ROOT, points)
    assert os.path.exists(os.path.join(ROOT, "cgroup.procs"))
    assert _cgroup.directory_of(os.getpid()) == ROOT


# ------------------------------------------------------------------ placement
@needs_cgroup
async def test_the_child_runs_in_its_own_cgroup(spawn_path: str, wait_mode: str) -> None:
    proc = await aioproc.spawn(["cat", "/proc/self/cgroup"], stdout=PIPE, cgroup=True)
    assert proc.cgroup is not None
    path = proc.cgroup.path
    assert relative(path) == os.path.basename(path)
    out, _ = await proc.communicate()
    assert f"0::/{relative(path)}" in out.decode().split("\n")
    await proc.aclose()
    assert gone(path), "the cgroup made for the child was not removed"
    assert ours_left() == []


@needs_cgroup
async def test_a_named_cgroup_is_made_and_removed() -> None:
    assert ROOT is not None
    path = os.path.join(ROOT, f"aioproc-{os.getpid()}-named")
    async with aioproc.spawn(["sleep", "30"], cgroup=path) as proc:
        assert proc.cgroup is not None
        assert proc.cgroup.path == path
        assert proc.cgroup.members() == [proc.pid]
    assert gone(path)


@needs_cgroup
async def test_an_existing_cgroup_is_used_and_left_in_place() -> None:
    assert ROOT is not None
    path = os.path.join(ROOT, f"aioproc-{os.getpid()}-existing")
    os.mkdir(path)
    try:
        async with aioproc.spawn(["sleep", "30"], cgroup=path) as proc:
            assert proc.cgroup is not None
            assert not proc.cgroup.created
            assert proc.cgroup.members() == [proc.pid]
        assert proc.cgroup.removed  # done with, though not removed
        assert not gone(path)
        await proc.aclose()  # a second close does not stop the cgroup again
    finally:
        os.rmdir(path)


async def test_bad_cgroup_arguments_make_nothing() -> None:
    before = children_of()
    with pytest.raises(TypeError, match="cgroup must be True"):
        await aioproc.spawn(["true"], cgroup=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown limit 'memory'"):
        await aioproc.spawn(["true"], cgroup=True, cgroup_limits={"memory": 1})
    with pytest.raises(ValueError, match="pids_max'\\]: 0 is not"):
        await aioproc.spawn(["true"], cgroup=True, cgroup_limits={"pids_max": 0})
    with pytest.raises(ValueError, match="cpu_max'\\]: nan is not"):
        await aioproc.spawn(["true"], cgroup=True, cgroup_limits={"cpu_max": float("nan")})
    with pytest.raises(ValueError, match="cgroup_limits needs cgroup=True"):
        await aioproc.spawn(["true"], cgroup_limits={"pids_max": 10})
    with pytest.raises(OSError, match="not a cgroup v2 directory"):
        await aioproc.spawn(["true"], cgroup="/tmp")
    assert children_of() == before
    assert ours_left() == []


def test_limit_values() -> None:
    assert _cgroup.check_cgroup_limits({"memory_max": "512M", "cpu_max": 0.5, "pids_max": 10}) == {
        "memory.max": str(512 * 2**20),
        "cpu.max": "50000 100000",
        "pids.max": "10",
    }
    assert _cgroup.check_cgroup_limits({"memory_max": "max", "cpu_max": "max 100000"}) == {
        "memory.max": "max",
        "cpu.max": "max 100000",
    }


# ------------------------------------------------------------------ stopping
SETSID_TREE = (
    # A leader that forks a child which leaves the session (setsid) and the
    # group, deaf to SIGTERM, and double-forks a sleep, deaf too.
    "setsid sh -c 'trap \"\" TERM; sleep 51 & echo $!; echo $$; wait' & wait"
)


@needs_cgroup
@pytest.mark.parametrize("kill_file", ["cgroup.kill", "fallback"])
async def test_a_setsid_double_forking_child_is_stopped_whole(
    spawn_path: str, wait_mode: str, kill_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if kill_file == "fallback":
        monkeypatch.setattr(_cgroup, "use_cgroup_kill", False)
    proc = await aioproc.spawn(
        ["sh", "-c", SETSID_TREE], stdout=PIPE, cgroup=True, kill_group=True, stop_timeout=0.3
    )
    assert proc.stdout is not None
    assert proc.cgroup is not None
    escaped = [int(await proc.stdout.readline()) for _ in range(2)]
    assert all(os.getpgid(p) != proc.pid for p in escaped)  # out of the group
    assert set(escaped) <= set(proc.cgroup.members())
    cgroup = proc.cgroup
    status = await proc.stop()
    assert status.signal is signal.SIGTERM  # the leader obeyed
    for pid in escaped:
        assert dead(pid), f"{pid} escaped the stop"
    assert not cgroup.populated
    assert gone(cgroup.path)
    await proc.aclose()


@needs_cgroup
async def test_run_leaves_nothing_of_the_cgroup(wait_mode: str) -> None:
    # The leader exits at once; what it left (out of its group) is killed.
    result = await aioproc.run(
        ["sh", "-c", "setsid sleep 53 >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        cgroup=True,
        stop_timeout=0.2,
    )
    assert dead(int(result.stdout))
    assert ours_left() == []


# ------------------------------------------------------------------ no cgroup v2
async def test_without_cgroup_v2_it_says_so_once_and_uses_a_process_group(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_cgroup, "forced_unavailable", "forced by the test")
    monkeypatch.setattr(_cgroup, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="aioproc"):
        for _ in range(2):
            async with aioproc.spawn(
                ["sh", "-c", "sleep 30 & echo $!; wait"], stdout=PIPE, cgroup=True
            ) as proc:
                assert proc.cgroup is None
                assert proc.kill_group
                assert proc.stdout is not None
                job = int(await proc.stdout.readline())
                assert group_members(proc.pid) == {proc.pid, job}
            assert dead(job)
    warnings = [r.getMessage() for r in caplog.records if r.name == "aioproc"]
    assert len(warnings) == 1, warnings
    assert "no writable cgroup v2 hierarchy (forced by the test)" in warnings[0]
    assert "falls back to process groups" in warnings[0]
    with pytest.raises(OSError, match="cgroup_limits need a cgroup: forced by the test"):
        await aioproc.spawn(["true"], cgroup=True, cgroup_limits={"pids_max": 5})


# ------------------------------------------------------------------ limits
@needs_cgroup
@pytest.mark.parametrize(
    ("key", "value", "controller"),
    [("memory_max", "64M", "memory"), ("pids_max", 10, "pids"), ("cpu_max", 0.5, "cpu")],
)
async def test_a_limit_without_its_controller_names_it(
    key: str, value: object, controller: str
) -> None:
    if available(controller) is None:
        pytest.skip(f"the {controller} controller is delegated here: the limit works")
    before = children_of()
    with pytest.raises(OSError, match=f"needs the {controller} controller") as info:
        await aioproc.spawn(["true"], cgroup=True, cgroup_limits={key: value})
    assert info.value.errno == errno.EOPNOTSUPP
    assert children_of() == before
    assert ours_left() == []


FORK_BOMB = "i=0; while [ $i -lt 100 ]; do sleep 30 >/dev/null 2>&1 & i=$((i+1)); echo $i; done"


async def test_a_fork_bomb_is_held_by_pids_max() -> None:
    why = available("pids")
    if why is not None:
        pytest.skip(why)
    result = await aioproc.run(
        ["sh", "-c", FORK_BOMB],
        capture_output=True,
        cgroup=True,
        cgroup_limits={"pids_max": 10},
        timeout=30,
    )
    assert len(result.stdout.split()) <= 9
    assert result.returncode != 0


async def test_a_memory_hog_is_stopped_by_memory_max() -> None:
    why = available("memory")
    if why is not None:
        pytest.skip(why)
    hog = "b = bytearray(512 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('done')"
    result = await aioproc.run(
        [sys.executable, "-c", hog],
        capture_output=True,
        cgroup=True,
        cgroup_limits={"memory_max": "64M"},
        timeout=30,
    )
    assert result.returncode == -signal.SIGKILL  # the OOM killer, inside the cgroup
    assert b"done" not in result.stdout


# ------------------------------------------------------------------ finalizer
@needs_cgroup
def test_a_dropped_process_kills_and_removes_its_cgroup() -> None:
    async def main() -> tuple[str, int]:
        proc = await aioproc.spawn(
            ["sh", "-c", "setsid sleep 54 >/dev/null 2>&1 & echo $!; exec sleep 30"],
            stdout=PIPE,
            cgroup=True,
        )
        assert proc.stdout is not None
        assert proc.cgroup is not None
        job = int(await proc.stdout.readline())
        path = proc.cgroup.path
        await asyncio.sleep(0)
        return path, job  # the process is dropped here: its finalizer runs

    path, job = asyncio.run(main())
    assert dead(job)
    assert gone(path)

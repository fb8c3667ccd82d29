"""Running the race scenarios: a child interpreter, alone in a fresh PID namespace.

``tests/races/programs/pidns.py`` does the work and prints one JSON line; the
tests assert on it. Inside the namespace the program is in charge of PID
allocation (``/proc/sys/kernel/ns_last_pid``), which needs root and
``unshare`` (util-linux); without them the tests that need a namespace are
skipped with the reason.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PROGRAMS = Path(__file__).parent / "programs"
PIDNS = PROGRAMS / "pidns.py"

LOOPS = ("asyncio", "uvloop")
MODES = ("pidfd", "pid")
#: Every (loop, mode) pair: the race tests run in each.
LOOPS_AND_MODES = [(loop, mode) for loop in LOOPS for mode in MODES]

# --kill-child: if unshare itself is killed (a test timing out), the namespace's
# init gets SIGKILL, and with it everything in the namespace.
UNSHARE = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child")


@functools.lru_cache(maxsize=1)
def namespace_unavailable() -> str | None:
    """Why PID-namespace tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root: writing ns_last_pid in a new PID namespace takes CAP_SYS_ADMIN"
    if shutil.which("unshare") is None:
        return "needs unshare(1) from util-linux"
    probe = subprocess.run(
        [*UNSHARE, "sh", "-c", "echo 99 > /proc/sys/kernel/ns_last_pid && sh -c 'echo $$'"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0 or probe.stdout.strip() != "100":
        detail = (probe.stderr or probe.stdout).strip()
        return (
            f"cannot steer PIDs in a new PID namespace here ({' '.join(UNSHARE)}): "
            f"{detail or probe.returncode}"
        )
    return None


def need_namespace() -> None:
    reason = namespace_unavailable()
    if reason is not None:
        pytest.skip(reason)


@functools.cache
def run_pidns(*args: str, namespace: bool = True, timeout: float = 60) -> dict[str, Any]:
    """Run ``pidns.py ARGS`` (in a new PID namespace) and return its JSON line.

    Cached: several tests assert on different parts of one run.
    """
    if namespace:
        need_namespace()
    cmd = [sys.executable, str(PIDNS), *args]
    if namespace:
        cmd = [*UNSHARE, *cmd]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(args)} failed:\n{res.stderr}"
    assert res.stderr == "", res.stderr
    result: dict[str, Any] = json.loads(res.stdout.splitlines()[-1])
    return result


def signalled_nothing(canary: dict[str, Any], our_child: bool = True) -> None:
    """Assert that a canary (see programs/canary.py) got no signal at all."""
    before = canary["before"]
    assert before is not None, f"canary {canary['pid']} was gone before we looked"
    assert before["State"] not in ("Z", "X", "T", "t"), before
    assert int(before["SigPnd"], 16) == 0, f"signal pending on the canary: {before}"
    assert int(before["ShdPnd"], 16) == 0, f"signal pending on the canary: {before}"
    assert canary["pending"] == [], f"the canary got signals {canary['pending']}"
    if our_child:
        assert canary["returncode"] == 0, f"the canary died: {canary['returncode']}"

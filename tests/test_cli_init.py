"""``aioproc init``'s final sweep (``_cli/_sweep.py``): a process that keeps forking
cannot escape it, with a cgroup and with the SIGSTOP fallback.

Every command run here is checked to leave no process behind (``nothing_left_behind``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aioproc._cli._sweep import Confinement, cgroup2_root

from .helpers import nothing_left_behind

FORK_CHAIN = Path(__file__).parent / "programs" / "fork_chain.py"

#: ``aioproc init`` run in-process by a fresh interpreter, the cgroup switch set first.
INIT = """
import sys
import aioproc._cli._sweep as sweep
sweep.use_cgroup = sys.argv[1] == "cgroup"
from aioproc._cli import main
sys.exit(main(["init", *sys.argv[2:]]))
"""

#: The command: start the chain in the background, exit once it runs (the sweep starts).
LAUNCH = f"""
import subprocess, sys
chain = subprocess.Popen([sys.executable, {str(FORK_CHAIN)!r}, *sys.argv[1:]],
                         stdout=subprocess.PIPE)
assert chain.stdout.readline() == b"running\\n"
"""


def _cgroup_usable() -> bool:
    conf = Confinement()
    try:
        return conf.path is not None
    finally:
        conf.close()


MODES = [
    pytest.param(
        "cgroup",
        marks=pytest.mark.skipif(
            not _cgroup_usable(), reason=f"no writable cgroup v2 here ({cgroup2_root()})"
        ),
    ),
    "sigstop",
]


@pytest.mark.parametrize("mode", MODES)
def test_a_forking_process_cannot_escape_the_sweep(mode: str) -> None:
    # The chain forks as fast as it can (cgroup) or every millisecond (SIGSTOP: a scan
    # of /proc has to find each generation alive to stop it).
    chain_args = ["20000", "20", "0" if mode == "cgroup" else "0.001"]
    with nothing_left_behind() as env:
        res = subprocess.run(
            [sys.executable, "-c", INIT, mode, "--grace", "0.2", "--",
             sys.executable, "-c", LAUNCH, *chain_args],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "could not be killed" not in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.skipif(not _cgroup_usable(), reason=f"no writable cgroup v2 here ({cgroup2_root()})")
def test_a_cgroup_made_below_the_confinement_is_swept_and_removed_with_it() -> None:
    # The command makes a cgroup of its own below the one it was born in and moves
    # a setsid()'d sleeper into it: the sweep kills it there, and removes both
    # cgroups (a bare rmdir of the outer one fails while the inner one exists).
    root = str(cgroup2_root())
    command = f"""
import os, subprocess, sys
with open("/proc/self/cgroup") as f:
    mine = next(line[3:].strip() for line in f if line.startswith("0::"))
outer = next(
    os.path.join({root!r}, name)
    for name in os.listdir({root!r})
    if name.startswith("aioproc-init-{{}}-".format(os.getppid()))
)
assert mine.endswith("/" + os.path.basename(outer)), (mine, outer)
inner = os.path.join(outer, "inner")
os.mkdir(inner)
sleeper = subprocess.Popen(["sleep", "1000"], start_new_session=True)
with open(os.path.join(inner, "cgroup.procs"), "w") as f:
    f.write(str(sleeper.pid))
print(outer, sleeper.pid, flush=True)
"""
    with nothing_left_behind() as env:
        res = subprocess.run(
            [sys.executable, "-c", INIT, "cgroup", "--grace", "0.2", "--",
             sys.executable, "-c", command],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert "cannot remove" not in res.stderr, res.stderr
    outer, pid = res.stdout.split()
    assert not Path(outer).exists()
    assert not Path(f"/proc/{pid}").exists()

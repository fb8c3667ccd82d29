"""``aioproc run`` (``_cli/_run.py``) as a real command: terminal safety, signals at start-up.

Every command run here is checked to leave no process behind (``nothing_left_behind``).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from .helpers import nothing_left_behind

ROOT = Path(__file__).resolve().parent.parent
AIOPROC = [sys.executable, "-m", "aioproc"]
CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
SGR = re.compile("\x1b\\[[0-9;:]*m")

EVIL = r"""printf '\033[31mred\033[0m\r\033[2Kweb | FAKE\033]0;owned\007\n'"""


@pytest.mark.parametrize("raw", [False, True], ids=["default", "raw-output"])
def test_service_output_cannot_rewrite_the_terminal(tmp_path: Path, raw: bool) -> None:
    (tmp_path / "Procfile").write_text(f"evil: {EVIL}\n")
    with nothing_left_behind() as env:
        env["FORCE_COLOR"] = "1"  # as on a terminal: our own colours are on
        res = subprocess.run(
            [*AIOPROC, "run", *(["--raw-output"] if raw else [])],
            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
    (line,) = [x for x in res.stdout.splitlines() if "FAKE" in x]
    payload = line.split("|", 1)[1]
    assert ("\x1b[31mred\x1b[0m" in payload) if raw else (r"\x1b[31mred\x1b[0m" in payload)
    assert r"\x0d\x1b[2Kweb | FAKE\x1b]0;owned\x07" in payload
    # Only our own prefix colours and (with --raw-output) SGR: no CR, no other ESC, no BEL.
    assert not CONTROL.search(SGR.sub("", line))


#: The console script's own lines (``[project.scripts]``), with a marker byte on
#: stdout once the entry module is imported (its handlers are in place from then
#: on). Run with ``-S``: the interpreter's ``site`` start-up (here, an editable
#: install's ``.pth`` finder, which imports pathlib) can take a SIGINT before any
#: code of ours runs, and Python reports that itself; so can the import of the
#: entry module itself (its few lines; see ``aioproc_main``).
CONSOLE_SCRIPT = (
    "import posix, sys; from aioproc_main import main; posix.write(1, b'>'); sys.exit(main())"
)


def test_signals_during_startup_print_no_traceback(tmp_path: Path) -> None:
    """SIGINT/SIGTERM at any moment of ``aioproc run``'s start-up: no traceback, nothing left.

    Each signal is sent a random 0-300 ms after the entry module is imported (the
    marker): the library's imports (~0.1 s), reading the configuration, the first
    spawn.
    """
    (tmp_path / "Procfile").write_text("web: exec sleep 30\n")
    paths = [str(ROOT), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    base = {**os.environ, "PYTHONPATH": ":".join(paths)}
    # The entry module compiled once (as an install does): its own import is the one
    # window left (tens of microseconds), and compiling it would widen that.
    subprocess.run([sys.executable, "-S", "-c", "import aioproc_main"], env=base, check=True)
    rng = random.Random(21)
    runs = 40
    for i in range(runs):
        sig = (signal.SIGINT, signal.SIGTERM)[i % 2]
        with nothing_left_behind(base) as env:
            proc = subprocess.Popen(
                [sys.executable, "-S", "-c", CONSOLE_SCRIPT, "run"],
                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            assert proc.stdout is not None
            assert proc.stdout.read(1) == b">"
            time.sleep(rng.uniform(0, 0.3))
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
        assert b"Traceback" not in err, err.decode()
        # Killed by the signal before anything started, or a clean shutdown after.
        assert proc.returncode in (-sig, 0), (proc.returncode, err.decode())


def test_sigusr1_during_startup_does_not_kill_run(tmp_path: Path) -> None:
    """logrotate's SIGUSR1 at any moment of ``aioproc run``'s start-up: dropped (no
    log file is open yet), and the run goes on to serve its services."""
    (tmp_path / "Procfile").write_text("web: echo up; exec sleep 30\n")
    paths = [str(ROOT), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    base = {**os.environ, "PYTHONPATH": ":".join(paths), "NO_COLOR": "1"}
    subprocess.run([sys.executable, "-S", "-c", "import aioproc_main"], env=base, check=True)
    rng = random.Random(19)
    for _ in range(12):
        with nothing_left_behind(base) as env:
            proc = subprocess.Popen(
                [sys.executable, "-S", "-c", CONSOLE_SCRIPT, "run", "--no-control"],
                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            assert proc.stdout is not None
            assert proc.stdout.read(1) == b">"
            time.sleep(rng.uniform(0, 0.3))
            proc.send_signal(signal.SIGUSR1)
            # Still alive: the service comes up, and a SIGTERM then stops it cleanly.
            for line in proc.stdout:
                if re.match(rb"web +\| up$", line):
                    break
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        assert b"Traceback" not in err, err.decode()
        assert proc.returncode == 0, (proc.returncode, err.decode())

"""Log files under a real ``aioproc run``: reopened on SIGUSR1 and on ``aioproc ctl reopen``.

What logrotate's ``create`` mode does: rename the file, then ask for a reopen. The
service keeps printing numbered lines throughout; the old file and the new one
together must hold every line exactly once. Each test waits for the files to
grow and for the run's own lines, never for a time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import nothing_left_behind
from .test_ctl import Run, ctl

#: Numbered lines, one write(2) each, about two thousand a second, until killed.
TALKER = (
    "import os, time\n"
    "i = 0\n"
    "while True:\n"
    "    os.write(1, f'{i}\\n'.encode()); i += 1\n"
    "    time.sleep(0.0005)\n"
)

CONFIG = f"""
[supervisor]
shutdown_timeout = 10

[services.talk]
argv = {json.dumps([sys.executable, "-c", TALKER])}
output = {{ file = "logs/x.log", max_bytes = "100M", backups = 2 }}
"""


def grown(path: Path, timeout: float = 15.0) -> None:
    """Poll until ``path`` exists and holds a line: the service writes to it."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and b"\n" in path.read_bytes()[:64]):
        assert time.monotonic() < deadline, f"{path} never received a line"
        time.sleep(0.005)


@pytest.fixture(params=["asyncio", "uvloop"])
def talking(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Run]:
    (tmp_path / "logs").mkdir()
    (tmp_path / "aioproc.toml").write_text(CONFIG)
    run = Run(tmp_path, "--loop", request.param)
    try:
        run.until(r"\| talk started")
        grown(tmp_path / "logs" / "x.log")
        yield run
    finally:
        run.close()


def check_every_line_once(logs: Path) -> None:
    old = (logs / "x.log.old").read_text()
    new = (logs / "x.log").read_text()
    assert old.endswith("\n")
    assert new.endswith("\n")
    numbers = [int(line) for line in (old + new).splitlines()]
    assert numbers == list(range(len(numbers)))


def test_sigusr1_reopens_the_log_files(talking: Run) -> None:
    logs = talking.directory / "logs"
    (logs / "x.log").rename(logs / "x.log.old")
    os.kill(talking.proc.pid, signal.SIGUSR1)
    path = re.escape(os.path.realpath(logs / "x.log"))
    talking.until(rf"^aioproc \| SIGUSR1 received: log files reopened: {path}$")
    grown(logs / "x.log")
    talking.close()
    assert talking.proc.returncode == 0
    check_every_line_once(logs)


def test_ctl_reopen_reopens_the_log_files(talking: Run) -> None:
    logs = talking.directory / "logs"
    (logs / "x.log").rename(logs / "x.log.old")
    res = ctl(talking.directory, "reopen")
    assert res.returncode == 0, res.stderr
    path = os.path.realpath(logs / "x.log")
    assert res.stdout == f"reopened {path}\n"
    talking.until(rf"^aioproc \| log files reopened: {re.escape(path)}$")
    grown(logs / "x.log")
    talking.close()
    assert talking.proc.returncode == 0
    check_every_line_once(logs)


def test_ctl_reopen_fails_with_exit_1_naming_the_file(talking: Run) -> None:
    logs = talking.directory / "logs"
    (logs / "x.log").rename(talking.directory / "x.log.old")
    logs.rmdir()  # nowhere to create the new file
    res = ctl(talking.directory, "reopen")
    assert res.returncode == 1
    assert res.stderr.startswith("aioproc ctl: error: cannot reopen log file ")
    path = os.path.realpath(logs / "x.log")
    assert f"{path}': [Errno 2] No such file or directory" in res.stderr
    talking.until(r"^aioproc \| cannot reopen log file .* \(still writing where it was\)$")
    # Still written where it was: the renamed file keeps growing.
    size = (talking.directory / "x.log.old").stat().st_size
    deadline = time.monotonic() + 15
    while (talking.directory / "x.log.old").stat().st_size == size:
        assert time.monotonic() < deadline
        time.sleep(0.005)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_log_file_that_cannot_be_written_is_one_line_not_a_traceback(
    tmp_path: Path, loop: str
) -> None:
    """/dev/full refuses every write (ENOSPC): the run says so once, in one line of its
    own, and goes on; the service ends well."""
    (tmp_path / "aioproc.toml").write_text(
        '[services.w]\ncommand = "seq 3; sleep 0.2; seq 3"\noutput = "/dev/full"\nrestart = "no"\n'
    )
    with nothing_left_behind() as env:
        env["NO_COLOR"] = "1"
        res = subprocess.run(
            [sys.executable, "-m", "aioproc", "run", "--no-control", "--loop", loop],
            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    reports = [line for line in res.stdout.splitlines() if "cannot write" in line]
    assert len(reports) == 1, res.stdout
    assert re.fullmatch(
        r"aioproc +\| cannot write to log file '/dev/full': .*No space left on device.*",
        reports[0],
    )


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_rotation_under_a_real_run_loses_and_doubles_nothing(tmp_path: Path, loop: str) -> None:
    """20,000 numbered lines through ``aioproc run`` into a file rotated every 4 KiB:
    oldest backup first, then the file, they hold every line once, in order."""
    (tmp_path / "aioproc.toml").write_text(
        '[services.w]\ncommand = "seq 20000"\nrestart = "no"\n'
        'output = { file = "w.log", max_bytes = 4096, backups = 100 }\n'
    )
    with nothing_left_behind() as env:
        res = subprocess.run(
            [sys.executable, "-m", "aioproc", "run", "--no-control", "--loop", loop],
            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
    assert res.returncode == 0, res.stderr
    backups = sorted(tmp_path.glob("w.log.*"), key=lambda p: -int(p.suffix[1:]))
    files = [*backups, tmp_path / "w.log"]
    assert len(files) > 20
    assert all(f.stat().st_size <= 4096 for f in files)
    text = "".join(f.read_text() for f in files)
    assert text == "".join(f"{i}\n" for i in range(1, 20001))

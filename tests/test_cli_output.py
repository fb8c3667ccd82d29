"""``aioproc run``'s console (``--timestamps``, ``--log-format json``, ``--mark-stderr``)
as a real command, on both loops; nothing is left behind by any run."""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import nothing_left_behind

AIOPROC = [sys.executable, "-m", "aioproc"]

pytestmark = pytest.mark.parametrize("loop", ["asyncio", "uvloop"])


def run(tmp_path: Path, loop: str, *args: str) -> subprocess.CompletedProcess[str]:
    with nothing_left_behind() as env:
        env["NO_COLOR"] = "1"
        return subprocess.run(
            [*AIOPROC, "run", "--loop", loop, "--no-control", *args],
            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip


def test_clock_timestamps_on_every_line(tmp_path: Path, loop: str) -> None:
    (tmp_path / "Procfile").write_text("web: echo hello\n")
    res = run(tmp_path, loop, "-t", "Procfile")  # a flag: FILE is not taken for its value
    lines = res.stdout.splitlines()
    assert "web" in res.stdout
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d (web|aioproc) +\| .*", line) for line in lines)
    assert any(re.fullmatch(r"\d\d:\d\d:\d\d web +\| hello", line) for line in lines)


def test_iso_timestamps_from_the_file(tmp_path: Path, loop: str) -> None:
    (tmp_path / "aioproc.toml").write_text(
        '[supervisor]\ntimestamps = "iso"\n[services.web]\ncommand = "echo hello"\n'
    )
    res = run(tmp_path, loop)
    (line,) = [x for x in res.stdout.splitlines() if x.endswith("| hello")]
    stamp = line.split(" ", 1)[0]
    when = datetime.datetime.fromisoformat(stamp)
    assert abs(when.timestamp() - datetime.datetime.now().timestamp()) < 60
    # The command line wins over the file.
    res = run(tmp_path, loop, "--time-format", "clock")
    assert re.search(r"^\d\d:\d\d:\d\d web +\| hello$", res.stdout, re.M)


def test_json_lines_carry_services_and_events(tmp_path: Path, loop: str) -> None:
    script = r"""printf 'plain\n\033[2Jesc "q" \\ b\n\377\n'; echo warn >&2; printf last; exit 3"""
    (tmp_path / "aioproc.toml").write_text(
        f'[services.web]\ncommand = {json.dumps(script)}\nrestart = "no"\n'
    )
    res = run(tmp_path, loop, "--log-format", "json")
    assert res.returncode == 3
    records = [json.loads(line) for line in res.stdout.splitlines()]  # every line is JSON
    lines = [r for r in records if "line" in r]
    assert [r["line"] for r in lines if r["stream"] == "stdout"] == [
        "plain",
        '\x1b[2Jesc "q" \\ b',
        "\\xff",
        "last",  # no newline: passed on at the end
    ]
    assert [r["line"] for r in lines if r["stream"] == "stderr"] == ["warn"]
    events = [r for r in records if "event" in r]
    starting = next(r for r in events if r["event"] == "starting")
    assert starting["service"] == "web"
    assert starting["attempt"] == 0
    assert {r["pid"] for r in lines} == {starting["pid"]}
    exited = next(r for r in events if r["event"] == "exited")
    assert exited["exit_code"] == 3
    assert exited["message"] == "web exited with code 3"
    assert all(r["event"] == "message" for r in events if "service" not in r)
    for r in records:
        datetime.datetime.fromisoformat(r["time"])


def test_stderr_marked(tmp_path: Path, loop: str) -> None:
    (tmp_path / "Procfile").write_text("web: echo out; echo err >&2\n")
    res = run(tmp_path, loop, "--mark-stderr")
    lines = res.stdout.splitlines()
    assert re.search(r"^web +\| out$", res.stdout, re.M), lines
    assert re.search(r"^web +! err$", res.stdout, re.M), lines


def test_a_last_line_without_newline_is_printed(tmp_path: Path, loop: str) -> None:
    (tmp_path / "Procfile").write_text("web: printf 'no newline'\n")
    res = run(tmp_path, loop)
    assert re.search(r"^web +\| no newline$", res.stdout, re.M)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('timestamps = "rfc"', 'timestamps must be true, false, "clock" or "iso"'),
        ('log_format = "xml"', 'log_format must be "text" or "json"'),
        ("mark_stderr = 1", "mark_stderr must be true or false"),
    ],
)
def test_bad_console_options_name_file_line_and_key(
    tmp_path: Path, loop: str, line: str, message: str
) -> None:
    (tmp_path / "aioproc.toml").write_text(
        f'[supervisor]\n{line}\n[services.web]\ncommand = "true"\n'
    )
    res = run(tmp_path, loop)
    assert res.returncode == 2
    assert res.stderr == f"aioproc: error: {tmp_path / 'aioproc.toml'}:2: {message}\n"
    assert res.stdout == ""

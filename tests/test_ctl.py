"""``aioproc ctl`` against real ``aioproc run`` processes in temporary directories.

Every command, its exit codes, the reload (by ``ctl reload`` and by SIGHUP), live
and stale sockets, and the idle cost of ``logs -f``. Each test waits for what it
expects to read (the run's output, the command's reply), never for a time.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aioproc._cli._ctl import format_table, sanitize

from .helpers import DROP_ROOT
from .test_cli import AIOPROC, Reader

CONFIG = """
[supervisor]
shutdown_timeout = 10

[services.db]
command = "trap 'echo db got USR1' USR1; echo db up; while :; do sleep 30 & wait $!; done"
ready = { line = "^db up$" }

[services.web]
command = "echo web up; exec sleep 60"
depends_on = ["db"]

[services.job]
command = "echo job done"
restart = "no"
"""


class Run:
    """An ``aioproc run`` in ``directory``; its output read line by line."""

    def __init__(self, directory: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.directory = directory
        self.proc = subprocess.Popen(
            [*AIOPROC, "run", *args],
            cwd=directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1", **(env or {})},
        )
        assert self.proc.stdout is not None
        self.out = Reader(self.proc.stdout.fileno())

    def until(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        return self.out.until(pattern, timeout)

    def pid_of(self, name: str) -> int:
        return int(self.until(rf"\| {name} started, pid (\d+)").group(1))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def started(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Run]:
    """A run of CONFIG (on each loop), once db and web are up and job has exited."""
    (tmp_path / "aioproc.toml").write_text(CONFIG)
    run = Run(tmp_path, "--loop", request.param)
    try:
        run.until(r"\| db is ready")
        with open(f"/proc/{run.proc.pid}/maps") as f:
            # Is the event loop really uvloop's (its extension module is mapped)?
            assert ("uvloop/loop." in f.read()) is (request.param == "uvloop")
        run.until(r"\| web started")
        run.until(r"\| job exited with code 0")
        yield run
    finally:
        run.close()


def ctl(directory: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 30
        ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [*AIOPROC, "ctl", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def rows(table: str) -> dict[str, dict[str, str]]:
    """The status table as {name: {column: cell}}."""
    lines = table.splitlines()
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"(?<!\S)\S", header)]
    names = [header[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
    out = {}
    for line in lines[1:]:
        cells = [line[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
        out[cells[0]] = dict(zip(names, cells, strict=True))
    return out


# ---------------------------------------------------------------- status


def test_status_table_and_exit_codes(started: Run) -> None:
    d = started.directory
    res = ctl(d, "status")
    assert res.returncode == 0, res.stderr
    table = rows(res.stdout)
    assert list(table) == ["db", "web", "job"]
    assert list(table["db"]) == [
        "NAME", "STATE", "PID", "UPTIME", "RESTARTS", "LAST-EXIT", "READY", "REASON"
    ]  # fmt: skip
    assert table["db"]["STATE"] == "running"
    assert table["db"]["READY"] == "yes"
    assert table["db"]["REASON"] == "ready"
    assert int(table["web"]["PID"]) > 0
    assert table["job"]["STATE"] == "exited"
    assert table["job"]["LAST-EXIT"] == "exit 0"
    assert table["job"]["REASON"] == "exited with code 0"

    one = ctl(d, "status", "--json", "db")
    assert one.returncode == 0
    reply = json.loads(one.stdout)
    assert [s["name"] for s in reply["services"]] == ["db"]
    assert reply["services"][0]["wanted"] is True
    assert reply["pid"] == started.proc.pid

    unknown = ctl(d, "status", "nope")
    assert unknown.returncode == 1
    assert unknown.stderr == "aioproc ctl: error: no service named 'nope'\n"

    stopped = ctl(d, "stop", "web")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == "web: stopped\n"
    res = ctl(d, "status")
    assert res.returncode == 3  # web is not where it should be
    assert rows(res.stdout)["web"]["STATE"] == "stopped"
    assert rows(res.stdout)["web"]["REASON"] == "stopped"
    assert ctl(d, "status", "db", "job").returncode == 0


def test_usage_errors_and_nothing_answering(tmp_path: Path) -> None:
    for args in (["status", "--bogus"], [], ["signal", "db"], ["logs", "-n", "x"]):
        res = ctl(tmp_path, *args)
        assert res.returncode == 2, (args, res)
    res = ctl(tmp_path, "status")
    assert res.returncode == 2
    sock = tmp_path / ".aioproc.sock"
    assert res.stderr == (
        f"aioproc ctl: error: no supervisor answers at {sock} (is 'aioproc run' running?)\n"
    )
    # A dead socket file answers no better.
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(sock))
    assert ctl(tmp_path, "status").returncode == 2


# ---------------------------------------------------------- start/stop/restart


def test_start_stop_restart_signal(started: Run) -> None:
    d = started.directory
    db = started.pid_of("db")
    web = started.pid_of("web")
    res = ctl(d, "restart", "web")
    assert res.returncode == 0, res.stderr
    new_web = int(re.fullmatch(r"web: running \(pid (\d+)\)\n", res.stdout).group(1))  # type: ignore[union-attr]
    assert new_web != web

    res = ctl(d, "stop", "all")  # dependents first: web, then db
    assert res.returncode == 0
    assert res.stdout == "db: stopped\nweb: stopped\njob: exited\n"
    started.until(r"\| db stopped$")
    stops = [line for line in started.out.lines if re.search(r"\| (web|db) stopped$", line)]
    assert stops[-2:] == ["aioproc | web stopped", "aioproc | db stopped"]
    # Everything stopped on request: the run waits for orders, it does not end.
    assert started.proc.poll() is None
    res = ctl(d, "start", "web", "db")
    assert res.returncode == 0, res.stderr
    assert ctl(d, "status").returncode == 0
    assert started.pid_of("db") == db  # (the first one)

    res = ctl(d, "signal", "db", "USR1")
    assert res.returncode == 0, res.stderr
    started.until(r"^db\s+\| db got USR1$")
    assert ctl(d, "signal", "nope", "USR1").returncode == 1
    assert ctl(d, "signal", "db", "SIGNOPE").returncode == 2

    failing = ctl(d, "restart", "job")  # restart="no", exits 0: completed as expected
    assert failing.returncode == 0


# ---------------------------------------------------------------------- logs


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_logs_last_lines_then_follow_with_idle_cpu_zero(started: Run) -> None:
    d = started.directory
    res = ctl(d, "logs", "-n", "1", "db")
    assert res.returncode == 0
    assert res.stdout == "db | db up\n"
    res = ctl(d, "logs")
    assert sorted(res.stdout.splitlines()) == ["db | db up", "job | job done", "web | web up"]
    res = ctl(d, "logs", "-t", "-n", "1", "db")
    stamp, rest = res.stdout.split(" ", 1)
    assert rest == "db | db up\n"
    assert abs(datetime.datetime.fromisoformat(stamp).timestamp() - time.time()) < 120

    # As on a terminal, SIGINT must not be ignored (a background job of a
    # non-interactive shell, as in CI, inherits it ignored).
    as_on_a_terminal = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv = ['aioproc', *sys.argv[1:]]; runpy.run_module('aioproc', run_name='__main__')"
    )
    follower = subprocess.Popen(
        [sys.executable, "-c", as_on_a_terminal, "ctl", "logs", "-f", "-n", "5", "db"],
        cwd=d,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert follower.stdout is not None
        out = Reader(follower.stdout.fileno())
        out.until(r"^db \| db up$")
        # The service is silent now: over a few seconds neither the follower nor
        # the supervisor uses any CPU (no polling anywhere).
        before = (_cpu_ticks(follower.pid), _cpu_ticks(started.proc.pid))
        t0 = time.monotonic()
        with pytest.raises(AssertionError):
            out.until("db got", timeout=3.0)  # nothing arrives
        after = (_cpu_ticks(follower.pid), _cpu_ticks(started.proc.pid))
        assert time.monotonic() - t0 >= 3.0
        assert after[0] - before[0] == 0, "ctl logs -f used CPU while idle"
        assert after[1] - before[1] <= 1, "aioproc run used CPU while idle"
        assert ctl(d, "signal", "db", "USR1").returncode == 0
        out.until(r"^db \| db got USR1$")
        follower.send_signal(signal.SIGINT)  # Ctrl-C ends it, quietly
        assert follower.wait(10) == 0
        assert follower.stderr is not None
        assert follower.stderr.read() == b""
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        for stream in (follower.stdout, follower.stderr):
            if stream is not None:
                stream.close()


def test_wait_returns_once_the_services_are_where_they_should_be(tmp_path: Path) -> None:
    (tmp_path / "aioproc.toml").write_text(
        "[services.slow]\n"
        "command = \"trap 'echo ready now' USR1; echo waiting; "
        'while :; do sleep 30 & wait $!; done"\n'
        'ready = { line = "^ready now$" }\n'
        '[services.crash]\ncommand = "exit 1"\nstart_limit = { burst = 1, interval = 60 }\n'
    )
    run = Run(tmp_path)
    try:
        run.until(r"^slow\s+\| waiting$")
        res = ctl(tmp_path, "wait", "slow", "--timeout", "0.3")
        assert res.returncode == 3, res
        assert rows(res.stdout)["slow"]["STATE"] == "starting"
        run.until(r"\| crash FATAL")
        res = ctl(tmp_path, "wait", "crash", "slow")  # FATAL: no waiting for ever
        assert res.returncode == 3, res
        assert set(rows(res.stdout)) == {"slow", "crash"}
        waiter = subprocess.Popen(
            [*AIOPROC, "ctl", "wait", "slow"], cwd=tmp_path, stdout=subprocess.PIPE, text=True
        )
        try:
            run.until(r"\| slow started")  # (seen before: the reader remembers)
            assert waiter.poll() is None  # slow cannot be ready before its USR1
            assert ctl(tmp_path, "signal", "slow", "USR1").returncode == 0
            assert waiter.wait(20) == 0
            assert waiter.stdout is not None
            assert waiter.stdout.read() == ""
        finally:
            if waiter.poll() is None:
                waiter.kill()
                waiter.wait()
            if waiter.stdout is not None:
                waiter.stdout.close()
        for odd, why in (
            ("nan", "timeout must be a number of seconds, not NaN"),
            ("-1", "timeout must not be negative"),
            ("inf", "timeout must be a finite number of seconds, not inf"),
        ):
            bad = ctl(tmp_path, "wait", "--timeout", odd)
            assert bad.returncode == 2, odd
            assert why in bad.stderr, bad.stderr
    finally:
        run.close()


def test_a_service_with_autostart_false_waits_for_ctl_start(tmp_path: Path) -> None:
    (tmp_path / "aioproc.toml").write_text(
        '[services.lazy]\ncommand = "echo lazy up; exec sleep 60"\nautostart = false\n'
        '[services.eager]\ncommand = "echo eager up; exec sleep 60"\n'
    )
    check = subprocess.run([*AIOPROC, "check"], cwd=tmp_path, capture_output=True, text=True)
    assert "lazy\n  command: echo lazy up; exec sleep 60\n" in check.stdout
    assert "  restart on-failure, started on request (autostart false)\n" in check.stdout
    run = Run(tmp_path)
    try:
        run.until(r"^eager\s+\| eager up$")
        table = rows(ctl(tmp_path, "status").stdout)
        assert table["lazy"]["STATE"] == "stopped"
        assert table["lazy"]["REASON"] == "autostart is false: started on request"
        status = ctl(tmp_path, "status")
        assert status.returncode == 0, status.stdout  # stopped is where it should be
        assert ctl(tmp_path, "start", "lazy").returncode == 0
        run.until(r"^lazy\s+\| lazy up$")
        assert rows(ctl(tmp_path, "status").stdout)["lazy"]["STATE"] == "running"
    finally:
        run.close()


def test_logs_of_a_service_whose_output_is_not_kept_say_so(tmp_path: Path) -> None:
    (tmp_path / "aioproc.toml").write_text(
        '[services.raw]\ncommand = "echo raw up; exec sleep 60"\noutput = "inherit"\n'
        '[services.kept]\ncommand = "echo kept up; exec sleep 60"\n'
    )
    run = Run(tmp_path)
    try:
        run.until(r"^raw up$")  # straight to our stdout, not through the supervisor
        run.until(r"^kept\s+\| kept up$")
        notice = 'aioproc ctl: raw: output = "inherit": its lines are not kept\n'
        res = ctl(tmp_path, "logs", "raw")
        assert (res.returncode, res.stdout, res.stderr) == (0, "", notice)
        res = ctl(tmp_path, "logs")
        assert (res.returncode, res.stdout, res.stderr) == (0, "kept | kept up\n", notice)
        res = ctl(tmp_path, "logs", "kept")
        assert (res.returncode, res.stdout, res.stderr) == (0, "kept | kept up\n", "")
    finally:
        run.close()


def test_service_output_cannot_drive_the_terminal() -> None:
    assert sanitize("red \x1b[31mtext\x07 \x9b2J\tok") == "red \\x1b[31mtext\\x07 \\x9b2J\tok"
    table = format_table(
        [{"name": "a", "state": "running", "pid": 1, "uptime": 3700.0, "restarts": 0,
          "last_exit": None, "ready": True, "ready_check": None, "reason": "\x1b]0;pwned\x07"}]
    )  # fmt: skip
    assert "\x1b" not in table
    assert "1h01m" in table


# -------------------------------------------------------------------- reload


def test_reload_adds_removes_restarts_and_keeps_pids(started: Run) -> None:
    d = started.directory
    db = started.pid_of("db")
    web = started.pid_of("web")
    config = d / "aioproc.toml"
    text = config.read_text()
    text = text.replace("echo web up; exec sleep 60", "echo web v2; exec sleep 60")
    text = text.replace('[services.job]\ncommand = "echo job done"\nrestart = "no"\n', "")
    text += '\n[services.extra]\ncommand = "echo extra up; exec sleep 60"\ndepends_on = "db"\n'
    config.write_text(text)
    res = ctl(d, "reload")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "added: extra\nremoved: job\nchanged: web\nunchanged: db\n"
    started.until(r"\| reloaded: added extra; removed job; restarted web$")
    started.until(r"^web\s+\| web v2$")
    started.until(r"^extra\s+\| extra up$")
    status = json.loads(ctl(d, "status", "--json").stdout)
    pids = {s["name"]: s["pid"] for s in status["services"]}
    assert list(pids) == ["db", "web", "extra"]
    assert pids["db"] == db  # unchanged: the same process
    assert pids["web"] not in (None, web)

    # An invalid file: reported to the caller and logged, nothing changes.
    config.write_text(text + '\n[services.broken]\ncommand = "x"\nrestrt = "no"\n')
    bad = ctl(d, "reload")
    assert bad.returncode == 1
    assert re.fullmatch(
        rf"aioproc ctl: error: {re.escape(str(config))}:\d+: service 'broken': "
        r"unknown option 'restrt' \(did you mean 'restart'\?\)\n",
        bad.stderr,
    ), bad.stderr
    started.until(r"\| reload failed, nothing changed: .*unknown option 'restrt'")
    again = json.loads(ctl(d, "status", "--json").stdout)
    assert {s["name"]: s["pid"] for s in again["services"]} == pids


def test_sighup_reloads_and_no_longer_shuts_down(started: Run) -> None:
    d = started.directory
    db = started.pid_of("db")
    config = d / "aioproc.toml"
    config.write_text(
        config.read_text() + '\n[services.late]\ncommand = "echo late up; exec sleep 60"\n'
    )
    started.proc.send_signal(signal.SIGHUP)
    started.until(r"\| SIGHUP received: reloading the configuration$")
    started.until(r"\| reloaded: added late$")
    started.until(r"^late\s+\| late up$")
    assert started.proc.poll() is None
    status = json.loads(ctl(d, "status", "--json").stdout)
    assert {s["name"]: s["pid"] for s in status["services"]}["db"] == db
    config.write_text("this is not toml")
    started.proc.send_signal(signal.SIGHUP)
    started.until(r"\| reload failed, nothing changed: .*aioproc\.toml:1")
    assert started.proc.poll() is None
    assert ctl(d, "status", "late").returncode == 0


def test_a_reload_names_the_settings_it_cannot_apply(started: Run) -> None:
    d = started.directory
    config = d / "aioproc.toml"
    config.write_text(
        config.read_text().replace(
            "shutdown_timeout = 10\n",
            'shutdown_timeout = 5\ntimestamps = "clock"\nhttp = "127.0.0.1:1"\nhttp_token = "t"\n',
        )
    )
    assert ctl(d, "reload").returncode == 0
    started.until(r"\| reloaded: nothing changed$")
    started.until(
        r"\| \[supervisor\] http, http_token, timestamps changed in aioproc\.toml: "
        r"applied when aioproc run starts again$"
    )
    # Still the start's form: no timestamps, and no HTTP server was started.
    assert ctl(d, "signal", "db", "USR1").returncode == 0
    started.until(r"^db\s+\| db got USR1$")


# ---------------------------------------------------------- shutdown, sockets


def test_shutdown_waits_until_everything_stopped(started: Run) -> None:
    d = started.directory
    res = ctl(d, "shutdown")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "shutting down\nstopped\n"
    assert started.proc.wait(10) == 0
    lines = started.out.rest()
    assert "aioproc | control: shutdown requested" in lines
    assert lines.index("aioproc | web stopped") < lines.index("aioproc | db stopped")
    assert not (d / ".aioproc.sock").exists()


def test_a_second_run_on_a_live_socket_starts_nothing_and_exits_2(started: Run) -> None:
    d = started.directory
    res = subprocess.run([*AIOPROC, "run"], cwd=d, capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr == (
        f"aioproc: error: control socket: {d / '.aioproc.sock'}: another supervisor is "
        "serving this control socket\n"
    )
    assert ctl(d, "status").returncode == 0  # the first one is untouched


def test_a_stale_socket_is_replaced_and_the_socket_is_private(tmp_path: Path) -> None:
    (tmp_path / "aioproc.toml").write_text(CONFIG)
    sock = tmp_path / ".aioproc.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(sock))  # left behind by a run that was SIGKILLed
    run = Run(tmp_path)
    try:
        run.until(r"\| db is ready")
        assert oct(sock.stat().st_mode & 0o777) == "0o600"
        assert ctl(tmp_path, "status", "db").returncode == 0
    finally:
        run.close()
    assert run.proc.returncode == 0
    assert not sock.exists()


def test_control_path_options(tmp_path: Path) -> None:
    (tmp_path / "aioproc.toml").write_text(CONFIG)
    elsewhere = tmp_path / "elsewhere.sock"
    run = Run(tmp_path, env={"AIOPROC_CONTROL": str(elsewhere)})
    try:
        run.until(r"\| db is ready")
        assert elsewhere.exists()
        assert not (tmp_path / ".aioproc.sock").exists()
        assert ctl(tmp_path, "status", "db").returncode == 2  # looks beside the file
        assert ctl(tmp_path, "--control", str(elsewhere), "status", "db").returncode == 0
        env = {"AIOPROC_CONTROL": str(elsewhere)}
        assert ctl(tmp_path, "status", "db", env=env).returncode == 0
    finally:
        run.close()
    run = Run(tmp_path, "--no-control")
    try:
        run.until(r"\| db is ready")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["aioproc.toml"]
    finally:
        run.close()


# Everything it will import is imported before dropping root: the other uid
# cannot read this interpreter's standard library under /root.
AS_ANOTHER_UID = (
    "import os, sys\n"
    "import aioproc._cli, aioproc._cli._run, aioproc._cli._config, aioproc._cli._serve\n"
    + textwrap.dedent(DROP_ROOT)
    + "sys.exit(aioproc._cli.main(sys.argv[1:]))\n"
)


@pytest.fixture
def read_only_dir() -> Iterator[Path]:
    """A directory another uid can read but not write to, with CONFIG in it."""
    path = Path(tempfile.mkdtemp(prefix="aioproc-ro-"))
    path.chmod(0o755)
    (path / "aioproc.toml").write_text(CONFIG)
    try:
        yield path
    finally:
        (path / "aioproc.toml").unlink()
        path.rmdir()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to drop to another uid")
def test_the_default_socket_is_skipped_where_it_cannot_be_made(read_only_dir: Path) -> None:
    config = str(read_only_dir / "aioproc.toml")
    proc = subprocess.Popen(
        [sys.executable, "-c", AS_ANOTHER_UID, "run", config],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.stdout is not None
    try:
        out = Reader(proc.stdout.fileno())
        out.until(
            rf"^aioproc \| no control socket at {re.escape(str(read_only_dir))}/\.aioproc\.sock: "
            r"Permission denied \(see --control\)$"
        )
        out.until(r"\| db is ready")  # and the services run all the same
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        proc.stdout.close()
    # A path asked for must work, or nothing starts.
    asked = subprocess.run(
        [sys.executable, "-c", AS_ANOTHER_UID, "run", config, "--control",
         str(read_only_dir / "ctl.sock")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert asked.returncode == 2
    assert asked.stdout == ""
    assert asked.stderr == (
        f"aioproc: error: control socket {read_only_dir / 'ctl.sock'}: Permission denied\n"
    )

"""The aioproc command, end to end: run (Procfile, aioproc.toml), init (PID 1), errors."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aioproc._cli import main
from aioproc._cli._config import ConfigError, load_config, parse_dotenv
from aioproc.supervisor import Liveness, ReadyExec, ReadyHTTP, ReadyLine, ReadyNotify, ReadyTCP

from .helpers import process_state
from .supervisor.util import free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
AIOPROC = [sys.executable, "-m", "aioproc"]


class Reader:
    """Reads lines from a pipe or pty with a deadline (no thread, no sleep)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.lines: list[str] = []
        self.eof = False

    def until(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for i in range(checked, len(self.lines)):
                m = regex.search(self.lines[i])
                if m:
                    return m
            checked = len(self.lines)
            left = deadline - time.monotonic()
            if self.eof or left <= 0:
                raise AssertionError(f"no line matching {pattern!r} in {self.lines}")
            self._fill(left)

    def _fill(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # a pty whose other side closed
            data = b""
        if not data:
            self.eof = True
            if self.buf:
                self.lines.append(self.buf.decode())
            return
        self.buf += data
        *done, self.buf = self.buf.split(b"\n")
        self.lines += [line.decode().rstrip("\r") for line in done]

    def rest(self, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self._fill(deadline - time.monotonic())
        return self.lines


def started_pids(lines: list[str]) -> list[int]:
    return [int(m.group(1)) for line in lines if (m := re.search(r"started, pid (\d+)", line))]


# ----------------------------------------------------------------- basics


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("aioproc ")
    for sub in (["run"], ["init"]):
        assert main([*sub, "--help"]) == 0
        assert "usage: aioproc" in capsys.readouterr().out
    assert main([]) == 2


def test_python_dash_m_is_the_command() -> None:
    out = subprocess.run([*AIOPROC, "--version"], capture_output=True, text=True, check=True)
    assert re.match(r"aioproc \d", out.stdout)


# ------------------------------------------------------------ bad configuration


BAD = [
    (
        "aioproc.toml",
        '[services.web]\ncommand = "touch started"\n\n'
        '[services.db]\ncommand = "x"\nrestrt = "no"\n',
        r"aioproc\.toml:6: service 'db': unknown option 'restrt' \(did you mean 'restart'\?\)",
    ),
    (
        "aioproc.toml",
        '[services.a]\ncommand = "touch started"\ndepends_on = ["b"]\n'
        '[services.b]\ncommand = "x"\ndepends_on = ["a"]\n',
        r"aioproc\.toml: dependency cycle: a -> b -> a",
    ),
    (
        "aioproc.toml",
        '[services.web]\ncommand = "touch started"\n[services.db]\nrestart = "always"\n',
        r"aioproc\.toml:3: service 'db': needs a 'command' \(run by the shell\) or an 'argv'",
    ),
    (
        "aioproc.toml",
        '[services.web]\ncommand = "touch started"\nrestart = always\n',
        r"aioproc\.toml:3:\d+: Invalid value",
    ),
    (
        "aioproc.toml",
        '[services.web]\ncommand = "touch started"\nready = { tcp = "localhost" }\n',
        r"aioproc\.toml:3: service 'web': ready.tcp must be \"HOST:PORT\"",
    ),
    (
        "aioproc.toml",
        '[services.web]\ncommand = "touch started"\n\n'
        '[services.db]\ncommand = "x"\nrlimits = { nofile = 10, nofiles = 3 }\n',
        r"aioproc\.toml:6: service 'db': rlimits: unknown limit 'nofiles'",
    ),
    (
        "aioproc.toml",
        '[services.web]\ncommand = "touch started"\nrlimits = { as = [20, 10] }\n',
        r"aioproc\.toml:3: service 'web': rlimits\['as'\]: the soft limit 20 is above",
    ),
    (
        "aioproc.toml",
        '[services.web]\ncommand = "touch started"\nliveness = { line = "up" }\n',
        r"aioproc\.toml:3: service 'web': liveness: unknown key 'line'",
    ),
    (
        "aioproc.toml",
        '[services.web]\ncommand = "touch started"\n'
        'liveness = { exec = ["true"], failure_threshold = 0 }\n',
        r"aioproc\.toml:3: service 'web': liveness.failure_threshold must be between 1 and",
    ),
    (
        "aioproc.toml",
        '[services.web]\ncommand = "touch started"\nready = { exec = "pg_isready" }\n',
        r"aioproc\.toml:3: service 'web': ready.exec is an argv list",
    ),
    (
        "aioproc.toml",
        '[services.web]\ncommand = "touch started"\nautostart = "no"\n',
        r"aioproc\.toml:3: service 'web': autostart must be true or false",
    ),
    (
        "aioproc.toml",
        '[services.web]\ncommand = "touch started"\ncgroup = "relative/x"\n',
        r"aioproc\.toml:3: service 'web': cgroup must be true, \"auto\" or an absolute",
    ),
    (
        "aioproc.toml",
        '[services.web]\ncommand = "touch started"\ncgroup = true\n'
        'cgroup_limits = { memory_max = "lots" }\n',
        r"aioproc\.toml:1: service 'web': cgroup_limits\['memory_max'\]: 'lots' is not a size",
    ),
    (
        "Procfile",
        "web: touch started\nworker python x.py\n",
        r"Procfile:2: expected 'name: command'",
    ),
    ("Procfile", "web: touch started\nweb: echo\n", r"Procfile:2: duplicate process name 'web'"),
    ("Procfile", "web: touch started\nworker:\n", r"Procfile:2: process 'worker' has no command"),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD, ids=[m[:40] for _, _, m in BAD])
def test_bad_config_is_one_line_exit_2_and_nothing_started(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    (tmp_path / name).write_text(text)
    res = subprocess.run([*AIOPROC, "run"], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert re.search(message, lines[0]), lines[0]
    assert lines[0].startswith("aioproc: error: ")
    assert str(tmp_path) in lines[0]
    assert res.stdout == ""
    assert not (tmp_path / "started").exists()


def test_no_config_and_unknown_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run"]) == 2
    assert "no aioproc.toml or Procfile" in capsys.readouterr().err
    (tmp_path / "Procfile").write_text("web: true\n")
    assert main(["run", "--only", "nope"]) == 2
    assert "no service named 'nope'" in capsys.readouterr().err


def test_toml_options_map_to_service_options(tmp_path: Path) -> None:
    (tmp_path / "aioproc.toml").write_text(
        """
[supervisor]
shutdown_timeout = 3

[services.db]
argv = ["db", "--fast"]
ready = { tcp = "127.0.0.1:5432", timeout = 4 }
stop_signal = "INT"
restart = "always"
backoff = { initial = 1, max = 9 }
start_limit = { burst = 2, interval = 5 }
success_exit_codes = [3, "SIGUSR1"]
env = { A = "1", B = 2 }
cwd = "sub"
output = "logs/db.log"

[services.web]
command = "serve"
depends_on = "db"
ready = { http = "http://127.0.0.1:1/x", interval = 0.5 }

[services.n]
command = "n"
ready = { notify = true, watchdog = 2 }

[services.l]
command = "l"
ready = { line = "up$" }
essential = true
rlimits = { nofile = [64, 128], core = 0, as = "infinity" }

[services.pg]
command = "postgres"
cgroup = true
cgroup_limits = { memory_max = "512M", pids_max = 100, cpu_max = 0.5 }
ready = { exec = ["pg_isready", "-q"], interval = 0.2 }

[services.pg.liveness]
http = "http://127.0.0.1:8000/health"
body = "ok"
initial_delay = 1
period = 5
timeout = 2
failure_threshold = 4
success_threshold = 2
"""
    )
    config = load_config(tmp_path / "aioproc.toml", only=["web"])
    assert config.shutdown_timeout == 3
    assert [s.name for s in config.services] == ["db", "web"]  # --only web brings db
    db, web = config.services
    assert db.argv == ["db", "--fast"]
    assert db.ready == ReadyTCP("127.0.0.1", 5432, timeout=4)
    assert db.stop_signal == signal.SIGINT
    assert (db.backoff.initial, db.backoff.max, db.start_limit.burst) == (1, 9, 2)
    assert db.success_exit_codes == {3, signal.SIGUSR1}
    assert db.env == {"A": "1", "B": "2"}
    assert db.cwd == tmp_path / "sub"
    assert db.output == str(tmp_path / "logs/db.log")
    assert web.argv == "serve"
    assert web.spawn_kwargs["shell"] is True
    assert web.depends_on == ("db",)
    assert isinstance(web.ready, ReadyHTTP)
    assert web.ready.interval == 0.5
    full = load_config(tmp_path / "aioproc.toml")
    n, line = full.services[2:4]
    assert isinstance(n.ready, ReadyNotify)
    assert n.ready.watchdog == 2
    assert isinstance(line.ready, ReadyLine)
    assert line.essential
    assert line.spawn_kwargs["rlimits"] == {"nofile": [64, 128], "core": 0, "as": "infinity"}
    pg = full.services[4]
    assert pg.spawn_kwargs["cgroup"] is True
    assert pg.spawn_kwargs["cgroup_limits"] == {
        "memory_max": "512M",
        "pids_max": 100,
        "cpu_max": 0.5,
    }
    assert pg.ready == ReadyExec(["pg_isready", "-q"], interval=0.2)
    assert pg.liveness == Liveness(
        ReadyHTTP("http://127.0.0.1:8000/health", body=re.compile("ok")),
        initial_delay=1,
        period=5,
        timeout=2,
        failure_threshold=4,
        success_threshold=2,
    )


def test_dotenv(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text(
        "# comment\nexport A=1\nB = two words # note\nC='$literal'\nD=\"line\\nbreak\"\n\n"
    )
    assert parse_dotenv(path) == {"A": "1", "B": "two words", "C": "$literal", "D": "line\nbreak"}
    path.write_text("A=1\nnot a pair\n")
    with pytest.raises(ConfigError, match=r"\.env:2: expected KEY=VALUE"):
        parse_dotenv(path)


# ------------------------------------------------------------------- run


def _run_example(stdout: int, env_extra: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, **env_extra}
    return subprocess.Popen(
        [*AIOPROC, "run", str(EXAMPLES / "Procfile")],
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,  # our own Ctrl-C, as a terminal would send it
    )


def test_run_example_procfile_under_a_pipe_then_sigint() -> None:
    port = free_port()
    r, w = os.pipe()
    proc = _run_example(w, {"PORT": str(port), "NO_COLOR": "1"})
    os.close(w)
    out = Reader(r)
    try:
        out.until(rf"^web     \| listening on http://127.0.0.1:{port}/$")
        out.until(r"^clock   \| tick 2$")
        pids = started_pids(out.lines)
        assert len(pids) == 2
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        lines = out.rest()
    finally:
        os.close(r)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    assert proc.stderr.read() == b""
    proc.stderr.close()
    # Every line whole, with its aligned prefix; the clock stopped cleanly on SIGTERM.
    for line in lines:
        assert re.match(r"^(aioproc|web    |clock  ) \| \S", line), line
    assert "clock   | clock: SIGTERM, stopping" in lines
    assert "aioproc | SIGINT received: stopping everything (again to kill at once)" in lines
    # No dependencies in a Procfile: the two stop concurrently, in either order.
    assert "aioproc | clock stopped" in lines
    assert "aioproc | web stopped" in lines
    for pid in pids:
        assert process_state(pid) is None


def test_run_under_a_pty_colours_the_prefixes() -> None:
    port = free_port()
    master, slave = pty.openpty()
    proc = _run_example(slave, {"PORT": str(port)})
    os.close(slave)
    out = Reader(master)
    try:
        out.until(r"\x1b\[36mweb     \|\x1b\[0m listening on")
        out.until(r"\x1b\[1maioproc \|\x1b\[0m clock started")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def test_second_signal_kills_at_once_and_failure_exit_code(tmp_path: Path) -> None:
    (tmp_path / "aioproc.toml").write_text(
        """
[services.deaf]
command = "trap '' TERM; echo up; while :; do sleep 0.05; done"
stop_timeout = 60
ready = { line = "up" }
"""
    )
    proc = subprocess.Popen(
        [*AIOPROC, "run", "--color=never"], cwd=tmp_path, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    out = Reader(proc.stdout.fileno())
    try:
        out.until(r"deaf is ready")
        proc.send_signal(signal.SIGINT)
        out.until(r"stopping deaf")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        # Killed, not stopped: not a clean end (128 + SIGKILL).
        assert proc.wait(timeout=10) == 128 + signal.SIGKILL
        assert time.monotonic() - t0 < 5
        lines = out.rest()
        assert any("received again: killing everything" in line for line in lines)
        assert "aioproc | deaf: stopped, 0 restarts, killed by SIGKILL: FAILED" in lines
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    (tmp_path / "aioproc.toml").write_text(
        '[services.a]\ncommand = "kill -USR1 $$"\nrestart = "no"\nessential = true\n'
        '[services.b]\ncommand = "exec sleep 30"\n'
    )
    res = subprocess.run([*AIOPROC, "run"], cwd=tmp_path, capture_output=True, timeout=20)
    assert res.returncode == 128 + signal.SIGUSR1
    assert b"a failed: exit code 138" in res.stdout


# ------------------------------------------------------------------- init

ORPHANS = """
for i in 1 2 3; do (sleep 0.1 & echo "orphan $!"); done
trap 'echo "got USR1"; exit 7' USR1
sleep 30 & echo "background $!"
echo ready
wait
"""


def test_init_reaps_orphans_forwards_signals_and_sweeps() -> None:
    proc = subprocess.Popen(
        [*AIOPROC, "init", "-v", "--grace", "1", "--", "sh", "-c", ORPHANS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    out, err = Reader(proc.stdout.fileno()), Reader(proc.stderr.fileno())
    try:
        out.until("^ready$")
        orphans = [int(line.split()[1]) for line in out.lines if line.startswith("orphan ")]
        background = int(out.until(r"^background (\d+)$").group(1))
        assert len(orphans) == 3
        for pid in orphans:  # re-parented to aioproc init, which reaps them as they exit
            err.until(rf"reaped orphan process {pid} exited with code 0")
            assert process_state(pid) is None  # no zombie left
        proc.send_signal(signal.SIGUSR1)
        out.until("^got USR1$")
        assert proc.wait(timeout=10) == 7
        # The child's background sleep outlived it: SIGTERM, reaped, gone.
        err.until(r"1 processes left: SIGTERM")
        assert process_state(background) is None
    finally:
        proc.stdout.close()
        proc.stderr.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_init_exit_code_for_a_signal_and_a_missing_program() -> None:
    res = subprocess.run([*AIOPROC, "init", "--", "sh", "-c", "kill -TERM $$"], timeout=20)
    assert res.returncode == 128 + signal.SIGTERM
    res = subprocess.run(
        [*AIOPROC, "init", "--", "/nonexistent"], capture_output=True, text=True, timeout=20
    )
    assert res.returncode == 127
    assert "cannot run /nonexistent" in res.stderr
    assert main(["init"]) == 2


@pytest.mark.parametrize("grace", ["nan", "inf", "-1"])
def test_init_refuses_a_grace_that_is_not_a_time(grace: str) -> None:
    res = subprocess.run(
        [*AIOPROC, "init", "--grace", grace, "--", "true"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert res.returncode == 2
    assert res.stdout == ""
    assert len(res.stderr.splitlines()) == 1, res.stderr
    assert res.stderr.startswith("aioproc: error: init: --grace must ")


def _unshare_works() -> bool:
    try:
        res = subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


IN_NAMESPACE = """
echo "my pid $$"
tr '\\0' ' ' < /proc/1/cmdline; echo
(sleep 0.1 & echo "orphan $!")
trap 'echo "got TERM"; exit 5' TERM
echo ready
sleep 30 & wait
"""


NO_PIDNS = "needs root and unshare --pid (PID namespaces)"


@pytest.mark.skipif(not _unshare_works(), reason=NO_PIDNS)
def test_init_as_pid_1_in_a_pid_namespace() -> None:
    proc = subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            *AIOPROC,
            "init",
            "-v",
            "--",
            "sh",
            "-c",
            IN_NAMESPACE,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    out, err = Reader(proc.stdout.fileno()), Reader(proc.stderr.fileno())
    try:
        out.until("^ready$")
        assert "my pid 2" in out.lines  # aioproc is PID 1, its child PID 2
        assert "-m aioproc init" in out.lines[1]
        orphan = int(out.until(r"^orphan (\d+)$").group(1))
        err.until(rf"reaped orphan process {orphan} exited with code 0")
        # Signal aioproc (PID 1 inside) from outside, by its PID out here.
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            (init_pid,) = (int(p) for p in f.read().split())
        os.kill(init_pid, signal.SIGTERM)
        out.until("^got TERM$")
        assert proc.wait(timeout=10) == 5
    finally:
        proc.stdout.close()
        proc.stderr.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_reaping_orphans_never_steals_the_main_childs_status() -> None:
    # The main child exits first and stays a zombie (its reap held), so that
    # waitid(P_ALL) names it before the "orphan": reaping it there would leave
    # aioproc with an unknown status (255) instead of the real exit code.
    from aioproc import spawn
    from aioproc._cli._init import reap_orphans
    from aioproc.supervisor._group import LeaderWatch, hold_reap

    main_proc = await spawn(["sh", "-c", "exit 9"])
    with hold_reap(main_proc):
        watch = LeaderWatch(main_proc, held=True)
        await watch.exited
        watch.close()
        # A child nobody tracks, like an orphan re-parented to init.
        other = os.posix_spawn("/bin/true", ["true"], dict(os.environ))  # noqa: ASYNC221
        fd = os.pidfd_open(other)
        try:
            select.select([fd], [], [], 10)  # the other child has exited
        finally:
            os.close(fd)
        reaped = reap_orphans(main_proc.pid)
        assert [s.pid for s in reaped] == [other]
        assert process_state(main_proc.pid) == "Z"  # still ours to reap
    status = await main_proc.wait()
    assert status.exit_code == 9
    assert not status.unknown

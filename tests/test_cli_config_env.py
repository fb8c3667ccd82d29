"""aioproc run's configuration beyond the basics: environment files and ``[env]``,
replicas with foreman's ``PORT``/``PS``, foreman's options and ``aioproc check``."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aioproc._cli import main
from aioproc._cli._config import ConfigError, LoadOptions, load_config
from aioproc._cli._run import run_services

from .helpers import process_state
from .test_cli import Reader, started_pids

AIOPROC = [sys.executable, "-m", "aioproc"]

# Each instance prints what foreman-style variables it got, then stays up.
SHOW = 'echo "ps=$PS port=$PORT instance=$AIOPROC_INSTANCE"; exec sleep 60'


def _cli(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AIOPROC, *args], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60
    )


def _one_line_error(res: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert res.returncode == 2, res
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("aioproc: error: ")
    assert re.search(pattern, lines[0]), lines[0]


async def _run(config_path: Path, options: LoadOptions | None = None) -> tuple[int, list[str]]:
    """Run a configuration in this process (on this test's loop) to its end."""
    config = load_config(config_path, options=options)
    out = io.StringIO()
    code = await run_services(config, color=False, stream=out)
    return code, out.getvalue().splitlines()


def _said(lines: list[str], name: str) -> list[str]:
    prefix = re.compile(rf"^{re.escape(name)}\s* \| ")
    return [prefix.sub("", line) for line in lines if prefix.match(line)]


# ----------------------------------------------------------------- Procfile parity


def test_procfile_instances_get_foremans_port_and_ps_and_stop_cleanly(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text(f"web: {SHOW}\n-worker_2: {SHOW}\nclock: {SHOW}\n")
    env = {k: v for k, v in os.environ.items() if k != "PORT"}
    env["NO_COLOR"] = "1"
    r, w = os.pipe()
    proc = subprocess.Popen(
        [*AIOPROC, "run", "-c", "web=2,-worker_2=3", "-c", "clock=0", "-p", "6000"],
        cwd=tmp_path,
        stdout=w,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    os.close(w)
    out = Reader(r)
    want = {
        "web.1": "ps=web.1 port=6000 instance=1",
        "web.2": "ps=web.2 port=6001 instance=2",
        "-worker_2.1": "ps=-worker_2.1 port=6100 instance=1",
        "-worker_2.2": "ps=-worker_2.2 port=6101 instance=2",
        "-worker_2.3": "ps=-worker_2.3 port=6102 instance=3",
    }
    try:
        for name, line in want.items():
            out.until(rf"^{re.escape(name)}\s+\| {line}$")
        pids = started_pids(out.lines)
        assert len(pids) == 5
        assert not any(line.startswith("clock") for line in out.lines)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        os.close(r)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    assert proc.stderr.read() == b""
    proc.stderr.close()
    for pid in pids:
        assert process_state(pid) is None


def test_procfile_port_base_from_the_environment_then_5000(tmp_path: Path) -> None:
    path = tmp_path / "Procfile"
    path.write_text("web: true\nworker: true\n")
    (tmp_path / ".env").write_text("PORT=7000\n")
    saved = os.environ.pop("PORT", None)
    try:
        services = load_config(path).services
        assert [s.env and s.env["PORT"] for s in services] == ["7000", "7100"]
        (tmp_path / ".env").unlink()
        services = load_config(path).services
        assert [s.env and s.env["PORT"] for s in services] == ["5000", "5100"]
        os.environ["PORT"] = "9000"  # the real environment wins over .env
        (tmp_path / ".env").write_text("PORT=7000\n")
        services = load_config(path).services
        assert [s.env and s.env["PORT"] for s in services] == ["9000", "9100"]
    finally:
        os.environ.pop("PORT", None)
        if saved is not None:
            os.environ["PORT"] = saved


def test_procfile_and_root_options_and_default_env_file(tmp_path: Path) -> None:
    files, root = tmp_path / "files", tmp_path / "root"
    files.mkdir()
    root.mkdir()
    (files / "Procfile.dev").write_text("web: true\n")
    (files / ".env").write_text("WHERE=beside the Procfile\n")
    (root / ".env").write_text("WHERE=in the root\n")
    config = load_config(files / "Procfile.dev", options=LoadOptions(root=root))
    [web] = config.services
    assert web.cwd == root
    assert web.env is not None
    assert web.env["WHERE"] == "in the root"
    # --env-file replaces the default .env, as foreman's -e does.
    other = tmp_path / "other.env"
    other.write_text("OTHER=1\n")
    config = load_config(files / "Procfile.dev", options=LoadOptions(env_files=(other,)))
    [web] = config.services
    assert web.env is not None
    assert "WHERE" not in web.env
    assert web.env["OTHER"] == "1"
    # The same through the command line.
    res = _cli(tmp_path, "check", "-f", "files/Procfile.dev", "-d", "root")
    assert res.returncode == 0, res.stderr
    assert "web\n  command: true\n  cwd: root\n" in res.stdout


BAD_OPTIONS = [
    (["-c", "nope=2"], r"Procfile: --concurrency: no process named 'nope'"),
    (["-c", "web"], r"--concurrency: expected NAME=COUNT, got 'web'"),
    (["-c", "web=\u00b2"], r"--concurrency: expected NAME=COUNT, got 'web=\u00b2'"),
    (["-e", "odd.env"], r"PORT must be a port number, not '\u00b2'"),
    (["-c", "web=0"], r"Procfile: no processes to run"),
    (["-c", "web=1001"], r"at most 1000 instances"),
    (["-p", "70000"], r"-p/--port: 70000 is not a port number"),
    (["-c", "web=2", "-p", "65535"], r"web\.2: PORT 65536 is past 65535"),
    (["-e", "missing.env"], r"missing\.env: cannot read"),
    (["-d", "nowhere"], r"-d/--root: nowhere is not a directory"),
    (["-f", "Procfile", "Other"], r"give the file once"),
]


@pytest.mark.parametrize(("args", "message"), BAD_OPTIONS)
def test_bad_options_are_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "Procfile").write_text("web: touch started\n")
    (tmp_path / "odd.env").write_text("PORT=\u00b2\n")  # a digit to str.isdigit(), not to int()
    for command in ("run", "check"):
        _one_line_error(_cli(tmp_path, command, *args), message)
    assert not (tmp_path / "started").exists()


def test_check_prints_the_services_and_hides_values(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("web: exec python3 web.py\n")
    (tmp_path / ".env").write_text("SECRET=hunter2\n")
    res = _cli(tmp_path, "check", "-c", "web=2")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert "Procfile: 2 services" in res.stdout
    assert "web.1\n  command: exec python3 web.py\n" in res.stdout
    assert "PS=web.2" in res.stdout
    assert "SECRET (values not shown)" in res.stdout
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "aioproc.toml").write_text(
        '[services.a]\ncommand = "true"\nenv = { SECRET = "x" }\n'
    )
    res = _cli(tmp_path / "only", "check")
    assert "\n  env: SECRET (values not shown)\n" in res.stdout, res.stdout
    assert "hunter2" not in res.stdout
    assert not list(tmp_path.glob("started*"))
    (tmp_path / "Procfile").write_text("web exec\n")
    _one_line_error(_cli(tmp_path, "check"), r"Procfile:1: expected 'name: command'")


def test_check_help_and_only_with_replicas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--help"]) == 0
    assert "usage: aioproc check" in capsys.readouterr().out
    path = tmp_path / "aioproc.toml"
    path.write_text(
        '[services.db]\ncommand = "true"\n'
        '[services.web]\ncommand = "true"\nreplicas = 2\ndepends_on = ["db"]\n'
        '[services.other]\ncommand = "true"\n'
    )
    config = load_config(path, only=["web"])
    assert [s.name for s in config.services] == ["db", "web.1", "web.2"]
    assert config.instances == {"web": ["web.1", "web.2"]}


# ----------------------------------------------------------------- aioproc.toml


def test_toml_env_files_and_env_tables_in_their_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lowest first: env files (global, --env-file, the service's), then the real
    # environment, then [env], then the service's env.
    (tmp_path / "global.env").write_text("A=global-file\nB=global-file\nC=global-file\nR=file\n")
    (tmp_path / "cli.env").write_text("B=cli-file\nF=cli-file\n")
    (tmp_path / "svc.env").write_text("C=svc-file\nD=svc-file\n")
    monkeypatch.setenv("R", "real")
    path = tmp_path / "aioproc.toml"
    path.write_text(
        'env_file = "global.env"\n'
        '[env]\nE = "global-table"\nD = "global-table"\n'
        "[services.app]\n"
        'command = "true"\n'
        'env_file = ["svc.env"]\n'
        'env = { E = "service-table" }\n'
    )
    options = LoadOptions(env_files=(tmp_path / "cli.env",))
    [app] = load_config(path, options=options).services
    assert app.env == {
        "A": "global-file",
        "B": "cli-file",
        "C": "svc-file",
        "D": "global-table",
        "E": "service-table",
        "F": "cli-file",
    }
    assert app.child_env({})["R"] == "real"


async def test_toml_replicas_run_with_their_variables_and_dependencies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PORT", raising=False)
    (tmp_path / "app.env").write_text('GREETING="hi \\"there\\""\n')
    path = tmp_path / "aioproc.toml"
    path.write_text(
        'env_file = "app.env"\n'
        "[services.prepare]\n"
        'command = "echo prepared"\nrestart = "no"\n'
        "[services.web]\n"
        "command = 'echo \"$GREETING ps=$PS port=$PORT instance=$AIOPROC_INSTANCE\"'\n"
        'restart = "no"\nreplicas = 3\ndepends_on = ["prepare"]\n'
        "[services.after]\n"
        'command = "echo after"\nrestart = "no"\ndepends_on = "web"\n'
    )
    config = load_config(path, options=LoadOptions(port=8000))
    assert [s.name for s in config.services] == ["prepare", "web.1", "web.2", "web.3", "after"]
    assert config.services[-1].depends_on == ("web.1", "web.2", "web.3")
    code, lines = await _run(path, LoadOptions(port=8000))
    assert code == 0, lines
    for i in (1, 2, 3):
        assert _said(lines, f"web.{i}") == [
            f'hi "there" ps=web.{i} port={8100 + i - 1} instance={i}'
        ]
    assert _said(lines, "after") == ["after"]
    # after started only once every instance of web was up.
    started = [line for line in lines if " started, pid " in line]
    assert started[-1].startswith("aioproc | after started")


BAD_TOML = [
    (
        '[services.web]\ncommand = "x"\nreplicas = 0\n',
        r"aioproc\.toml:3: service 'web': replicas must be",
    ),
    (
        '[services.web]\ncommand = "x"\nreplicas = true\n',
        r"aioproc\.toml:3: service 'web': replicas must be",
    ),
    ('env_file = 3\n[services.web]\ncommand = "x"\n', r"aioproc\.toml:1: env_file must be"),
    ('env = "x"\n[services.web]\ncommand = "x"\n', r"aioproc\.toml:1: env must be a table"),
    ('[services.web]\ncommand = "x"\nenv_file = "nope.env"\n', r"nope\.env: cannot read"),
    ('[services.web]\ncommand = "x"\nenv_file = ".env"\n', r"\.env:2: expected KEY=VALUE"),
]


@pytest.mark.parametrize(("text", "message"), BAD_TOML)
def test_bad_toml_env_and_replicas(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / ".env").write_text("A=1\n=bad\n")
    (tmp_path / "aioproc.toml").write_text(text)
    _one_line_error(_cli(tmp_path, "run"), message)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "aioproc.toml")

"""``aioproc run``'s configuration checked before anything starts (``_cli/_config.py``).

Bad values are refused with exit code 2 and one line naming the file, the line of
the offending key and the key; generated inputs (hypothesis) either load or are
refused that way, never with a traceback.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aioproc._cli import main
from aioproc._cli._config import SERVICE_OPTIONS, ConfigError, load_config
from aioproc._cli._toml_lines import KeyLines
from aioproc.supervisor import LogFile

from .helpers import nothing_left_behind

AIOPROC = [sys.executable, "-m", "aioproc"]
HEAD = '[services.web]\ncommand = "touch started"\n'

#: (the rest of the [services.web] table, the line, what the message must say)
BAD = [
    ("umask = 1099511627776\n", 3, r"umask must be between 0 and 511"),
    ('umask = "999"\n', 3, r"umask must be octal digits"),
    ("user = 1099511627776\n", 3, r"user id must be between 0 and 4294967294"),
    ("user = -1\n", 3, r"user id must be between"),
    ('user = "no-such-user-aioproc"\n', 3, r"unknown user 'no-such-user-aioproc'"),
    ('group = "no-such-group-aioproc"\n', 3, r"unknown group 'no-such-group-aioproc'"),
    ("group = 4294967295\n", 3, r"group id must be between"),
    ('env = { "A=B" = "x" }\n', 3, r"env: 'A=B' cannot be a variable name"),
    ('env = { "A\\u0000" = "x" }\n', 3, r"env: 'A\\x00' cannot be a variable name"),
    ('[services.web.env]\nOK = "1"\n"X=Y" = "2"\n', 5, r"env: 'X=Y' cannot be"),
    ('env = { A = "a\\u0000b" }\n', 3, r"env.A: a NUL character"),
    ("backoff.initial = nan\n", 3, r"backoff.initial must be a finite number, not nan"),
    ("backoff = { max = inf }\n", 3, r"backoff.max must be a finite number, not inf"),
    ("\n[services.web.backoff]\nfactor = -inf\n", 5, r"backoff.factor must be a finite"),
    ("ready.notify = true\nready.timeout = nan\n", 4, r"ready.timeout must be a finite"),
    ("ready = { notify = true, watchdog = nan }\n", 3, r"ready.watchdog must be a finite"),
    ("ready = { notify = true, watchdog = 1e300 }\n", 3, r"ready.watchdog must be between"),
    ("start_limit = { interval = inf }\n", 3, r"start_limit.interval must be a finite"),
    ("start_limit = { burst = 1099511627776 }\n", 3, r"start_limit.burst must be between"),
    ("stop_timeout = -inf\n", 3, r"stop_timeout must be a finite"),
    ("stable_after = nan\n", 3, r"stable_after must be a finite"),
    ("success_exit_codes = [0, 1099511627776]\n", 3, r"an exit code must be between 0 and 255"),
    ("stop_signal = 1099511627776\n", 3, r"stop_signal: 1099511627776 is not a signal"),
    ('ready = { tcp = "127.0.0.1:99999" }\n', 3, r"ready.tcp: '99999' is not a port"),
    ('output = { file = "x.log", max_bytes = -1 }\n', 3, r"output.max_bytes must be a size"),
    ('output = { file = "x.log", max_bytes = "10Q" }\n', 3, r"output.max_bytes must be a size"),
    ('output = { file = "x.log", max_bytes = 1.5 }\n', 3, r"output.max_bytes must be a size"),
    ('output = { file = "x.log", backups = "x" }\n', 3, r"output.backups must be an integer"),
    ('output = { file = "x.log", backups = -1 }\n', 3, r"output.backups must be between 0"),
    ('output = { file = "x.log", rotate = 3 }\n', 3, r"output: unknown key 'rotate' \(expected"),
    ("output = { max_bytes = 100 }\n", 3, r"output needs a file"),
    ('output = { file = "" }\n', 3, r"output.file must be a file path"),
    ('output = { file = "a\\u0000b" }\n', 3, r"output.file must be a file path"),
    ("output = 3\n", 3, r'output must be "prefix", "inherit", a file path or a table'),
    ('\n[services.web.output]\nfile = "x.log"\nbackups = true\n', 6, r"output.backups must be"),
    ("x = " + "[" * 3000 + "]" * 3000 + "\n", 3, r"nested too deeply \(key 'x'\)"),
    ("env = { A = " + "[" * 3000 + "]" * 3000 + " }\n", 3, r"nested too deeply \(key 'env'\)"),
]


@pytest.mark.parametrize(("rest", "line", "message"), BAD, ids=[m[:40] for _, _, m in BAD])
def test_bad_values_name_file_line_and_key(
    tmp_path: Path, rest: str, line: int, message: str
) -> None:
    path = tmp_path / "aioproc.toml"
    path.write_text(HEAD + rest)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert text.startswith(f"{path}:{line}: "), text
    assert re.search(message, text), text
    assert len(text.splitlines()) == 1


@pytest.mark.parametrize("rest", [b[0] for b in BAD[::3]], ids=[b[2][:30] for b in BAD[::3]])
def test_bad_values_exit_2_with_one_line_before_anything_starts(tmp_path: Path, rest: str) -> None:
    (tmp_path / "aioproc.toml").write_text(HEAD + rest)
    with nothing_left_behind() as env:
        res = subprocess.run(
            [*AIOPROC, "run"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60
        )
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.splitlines()) == 1, res.stderr
    assert res.stderr.startswith(f"aioproc: error: {tmp_path / 'aioproc.toml'}:")
    assert not (tmp_path / "started").exists()


@pytest.mark.parametrize("rest", [b[0] for b in BAD if b[0].startswith("output")])
def test_bad_output_tables_exit_2_naming_file_line_and_key(tmp_path: Path, rest: str) -> None:
    (tmp_path / "aioproc.toml").write_text(HEAD + rest)
    res = subprocess.run(
        [*AIOPROC, "check"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.splitlines()) == 1, res.stderr
    assert res.stderr.startswith(f"aioproc: error: {tmp_path / 'aioproc.toml'}:3: service 'web': ")
    assert "output" in res.stderr


def test_output_as_a_table_is_a_rotated_log_file(tmp_path: Path) -> None:
    path = tmp_path / "aioproc.toml"
    path.write_text(
        "[services.a]\ncommand = 'true'\n"
        'output = { file = "logs/a.log", max_bytes = "10M", backups = 3 }\n'
        "[services.b]\ncommand = 'true'\n"
        'output = { file = "/var/log/b.log", max_bytes = 4096 }\n'
        "[services.c]\ncommand = 'true'\n"
        '[services.c.output]\nfile = "c.log"\nmax_bytes = "1 KiB"\nbackups = 0\n'
        "[services.d]\ncommand = 'true'\n"
        'output = "d.log"\n'
    )
    services = {s.name: s for s in load_config(path).services}
    assert services["a"].output == LogFile(str(tmp_path / "logs/a.log"), 10 * 2**20, 3)
    assert services["b"].output == LogFile("/var/log/b.log", 4096, 5)
    assert services["c"].output == LogFile(str(tmp_path / "c.log"), 1024, 0)
    assert services["d"].output == str(tmp_path / "d.log")  # a plain path: never rotated
    # Read again, it is the same: a reload leaves the service running.
    assert load_config(path).services[0].output == services["a"].output


def test_two_services_cannot_rotate_one_file_differently(tmp_path: Path) -> None:
    path = tmp_path / "aioproc.toml"
    path.write_text(
        "[services.a]\ncommand = 'true'\noutput = { file = 'x.log', max_bytes = 100 }\n"
        "[services.b]\ncommand = 'true'\noutput = 'x.log'\n"
    )
    with pytest.raises(ConfigError, match=r"aioproc.toml: services 'a' and 'b' write to the same"):
        load_config(path)


def test_supervisor_table_values(tmp_path: Path) -> None:
    path = tmp_path / "aioproc.toml"
    path.write_text("# top\n[supervisor]\nshutdown_timeout = nan\n\n" + HEAD)
    with pytest.raises(ConfigError, match=r"aioproc\.toml:3: shutdown_timeout must be a finite"):
        load_config(path)


def test_dotenv_and_procfile_nul(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("web: true\n")
    (tmp_path / ".env").write_text('A=1\nB="x\\u0000"\nC=a\0b\n')
    with pytest.raises(ConfigError, match=r"\.env:3: the value of C holds a NUL byte"):
        load_config(tmp_path / "Procfile")
    (tmp_path / ".env").unlink()
    (tmp_path / "Procfile").write_text("web: true\nbad: echo a\0b\n")
    with pytest.raises(ConfigError, match=r"Procfile:2: process 'bad': a NUL character"):
        load_config(tmp_path / "Procfile")


def test_messages_stay_one_line(tmp_path: Path) -> None:
    path = tmp_path / "aioproc.toml"
    path.write_text(HEAD + 'env = { "a\\u2028b\\nc=" = "x" }\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(str(info.value).splitlines()) == 1
    assert r"\u2028" in str(info.value)


def test_key_lines_best_effort() -> None:
    text = (
        "# c\n[supervisor]\nshutdown_timeout = nan\n\n[services.web]\ncommand = 'x'\n"
        'backoff = { initial = nan }\nready.timeout = nan\n\n[services."db"]\n'
        "command = 'y'\n\n[services.db.start_limit]\nburst = 0\n"
    )
    lines = KeyLines(text)
    assert lines.find(("supervisor",), ("shutdown_timeout",)) == 3
    assert lines.find(("services", "web"), ("backoff", "initial")) == 7
    assert lines.find(("services", "web"), ("ready", "timeout")) == 8
    assert lines.find(("services", "db"), ("start_limit", "burst")) == 14
    assert lines.find(("services", "db"), ("start_limit",)) == 13
    assert lines.find(("services", "db"), ("user",)) == 10  # not there: the header
    assert lines.find(("services", "nope"), ("x",)) is None


# ---------------------------------------------------------------------- fuzzing


def toml_value(value: Any) -> str:
    """``value`` as TOML text (an inline table for a dict)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # lone surrogates come out as \ud800: a TOML error
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    raise TypeError(value)


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


EDGE_NUMBERS = st.sampled_from(
    [0, -1, 1, 2**31, 2**32 - 1, 2**32, 2**63, 1099511627776, -(2**63), 0.5, 1e300, 1e-300,
     math.nan, math.inf, -math.inf, -0.0]
)  # fmt: skip
SCALARS = st.one_of(
    EDGE_NUMBERS,
    st.integers(),
    st.floats(),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["root", "nobody", "no-such-user-aioproc", "", "SIGTERM", "KILL", "022",
                     "prefix", "inherit", "always", "no", "a=b", "a\0b", "127.0.0.1:1",
                     "10M", "1 KiB", "x.log"]),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(
                st.sampled_from(["initial", "factor", "max", "jitter", "burst", "interval",
                                 "tcp", "http", "line", "notify", "timeout", "watchdog",
                                 "access", "PATH", "A=B", "", "file", "max_bytes",
                                 "backups"]),
                st.text(max_size=5),
            ),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=6,
)  # fmt: skip
OPTION = st.one_of(
    st.sampled_from(["command", "argv", *SERVICE_OPTIONS]), st.text(min_size=1, max_size=6)
)
SERVICE = st.dictionaries(OPTION, VALUES, max_size=4).map(
    lambda d: {"command": "true", **d} if "argv" not in d else d
)
NAMES = st.one_of(st.sampled_from(["web", "db", "w.1", "-x", "a b"]), st.text(max_size=4))


@st.composite
def toml_files(draw: st.DrawFn) -> str:
    parts = []
    if draw(st.booleans()):
        value = draw(st.one_of(VALUES, st.just(30)))
        parts.append(f"[supervisor]\nshutdown_timeout = {toml_value(value)}\n")
    for name, table in draw(st.dictionaries(NAMES, SERVICE, min_size=0, max_size=3)).items():
        parts.append(f"[services.{json.dumps(name)}]")
        for key, value in table.items():
            parts.append(f"{json.dumps(key)} = {toml_value(value)}")
        if draw(st.integers(0, 9)) == 0:
            parts.append(f"deep = {deep(draw(st.sampled_from([10, 300, 1000, 5000])))}")
    if draw(st.integers(0, 9)) == 0:
        parts.append(draw(st.text(max_size=30)))  # whatever: often a TOML syntax error
    return "\n".join(parts) + "\n"


PROCFILE_LINES = st.one_of(
    st.sampled_from(["web: true", "web: exit 3", "w.1: true", "bad", ": x", "x:", "# c", ""]),
    st.text(max_size=20),
    st.builds(lambda n, c: f"{n}: {c}", st.text(max_size=6), st.text(max_size=12)),
)
DOTENV_LINES = st.one_of(
    st.sampled_from(["A=1", "export B=2", "C='x", 'D="a\\nb"', "E=a # c", "=x", "F"]),
    st.text(max_size=20),
)


def check_load(path: Path) -> str:
    """Load ``path`` as ``aioproc run`` does: loaded, or ConfigError with one line."""
    try:
        load_config(path)
    except ConfigError as exc:
        message = str(exc)
        assert len(message.splitlines()) == 1, message
        assert message.startswith(str(path.parent)), message
        return "refused"
    return "loaded"


FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(text=toml_files())
def test_fuzz_toml_loads_or_is_refused_in_one_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "aioproc.toml"
    path.write_text(text, errors="surrogateescape")
    check_load(path)


@FUZZ
@given(
    procfile=st.lists(PROCFILE_LINES, max_size=4),
    dotenv=st.none() | st.lists(DOTENV_LINES, max_size=4),
)
def test_fuzz_procfile_and_dotenv_load_or_are_refused_in_one_line(
    tmp_path: Path, procfile: list[str], dotenv: list[str] | None
) -> None:
    (tmp_path / "Procfile").write_text("\n".join(procfile) + "\n", errors="surrogateescape")
    env = tmp_path / ".env"
    if dotenv is None:
        env.unlink(missing_ok=True)
    else:
        env.write_text("\n".join(dotenv) + "\n", errors="surrogateescape")
    check_load(tmp_path / "Procfile")


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=toml_files())
def test_fuzz_real_command_never_prints_a_traceback(tmp_path: Path, text: str) -> None:
    """A few generated files through the real command: exit 2 in one line, or a run."""
    path = tmp_path / "aioproc.toml"
    path.write_text(text, errors="surrogateescape")
    with nothing_left_behind() as env:
        proc = subprocess.Popen(
            [*AIOPROC, "run", str(path)],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            _, err = proc.communicate(timeout=3)
        except subprocess.TimeoutExpired:  # it runs (restart = "always"...): stop it
            proc.terminate()
            _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err, err.decode(errors="replace")
    if proc.returncode == 2:
        assert len(err.splitlines()) == 1, err


def test_main_reports_config_errors_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "aioproc.toml").write_text(HEAD + "umask = 1099511627776\n")
    assert main(["run", str(tmp_path / "aioproc.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "aioproc.toml:3: service 'web': umask" in err

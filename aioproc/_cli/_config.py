"""Reading ``aioproc run``'s configuration: a Procfile (+ ``.env``) or an ``aioproc.toml``.

Every problem is a :class:`ConfigError` whose message is one line naming the file and
the line or the service: ``Procfile:3: expected 'name: command'``,
``aioproc.toml:12: service 'web': unknown option 'restrt' (did you mean 'restart'?)``.
Nothing is started before the whole file has been checked.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import signal
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .._limits import check_rlimits
from ..supervisor import (
    Backoff,
    Liveness,
    ReadyExec,
    ReadyHTTP,
    ReadyLine,
    ReadyNotify,
    ReadyTCP,
    Service,
    StartLimit,
    Supervisor,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = ["Config", "ConfigError", "find_config", "load_config", "parse_dotenv"]

CONFIG_NAMES = ("aioproc.toml", "Procfile")

#: The options of ``[services.NAME]`` besides ``command``/``argv``.
SERVICE_OPTIONS = (
    "restart",
    "backoff",
    "start_limit",
    "stable_after",
    "depends_on",
    "ready",
    "liveness",
    "essential",
    "stop_signal",
    "stop_timeout",
    "kill_group",
    "env",
    "cwd",
    "output",
    "success_exit_codes",
    "restart_exit_codes",
    "user",
    "group",
    "umask",
    "rlimits",
    "cgroup",
    "cgroup_limits",
)


class ConfigError(Exception):
    """A configuration that cannot be run; ``str()`` is the one-line message."""


@dataclasses.dataclass
class Config:
    path: Path
    services: list[Service]
    shutdown_timeout: float = 30.0

    def supervisor(self, **kwargs: Any) -> Supervisor:
        return Supervisor(self.services, shutdown_timeout=self.shutdown_timeout, **kwargs)


def find_config(directory: Path) -> Path:
    """``aioproc.toml``, else ``Procfile``, in ``directory``."""
    for name in CONFIG_NAMES:
        path = directory / name
        if path.is_file():
            return path
    raise ConfigError(f"no aioproc.toml or Procfile in {directory}")


def load_config(path: Path, only: Iterable[str] = ()) -> Config:
    """Read and check ``path``; with ``only``, keep those services and their dependencies."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    toml = path.suffix == ".toml"
    config = _load_toml(path, text) if toml else _load_procfile(path, text)
    config.services = _select(path, config.services, list(only))
    try:
        # Checks names, dependencies and cycles; starts nothing.
        config.supervisor()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config


def _select(path: Path, services: list[Service], only: list[str]) -> list[Service]:
    if not only:
        return services
    by_name = {s.name: s for s in services}
    wanted: list[str] = []
    todo = list(only)
    while todo:
        name = todo.pop(0)
        if name not in by_name:
            raise ConfigError(f"{path}: --only: no service named {name!r}")
        if name not in wanted:
            wanted.append(name)
            todo.extend(by_name[name].depends_on)
    return [s for s in services if s.name in wanted]


# ----------------------------------------------------------------------- Procfile

_PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_.-]*)\s*:\s*(.*)$")


def _load_procfile(path: Path, text: str) -> Config:
    """honcho/foreman format: ``name: command`` lines, run by /bin/sh, in the file's
    directory, with the variables of ``.env`` beside it added to the environment
    (those not set already). Every process is essential (as in foreman: when one
    ends for good, all stop); otherwise each has the Service defaults."""
    env: dict[str, str] = {}
    dotenv = path.parent / ".env"
    if dotenv.is_file():
        # The real environment wins, so that ``PORT=9000 aioproc run`` overrides it.
        env = {k: v for k, v in parse_dotenv(dotenv).items() if k not in os.environ}
    services: list[Service] = []
    seen: set[str] = set()
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _PROCFILE_LINE.match(line)
        if not m:
            raise ConfigError(f"{path}:{lineno}: expected 'name: command', got {raw!r}")
        name, command = m.group(1), m.group(2).strip()
        if name in seen:
            raise ConfigError(f"{path}:{lineno}: duplicate process name {name!r}")
        if not command:
            raise ConfigError(f"{path}:{lineno}: process {name!r} has no command")
        seen.add(name)
        try:
            services.append(
                Service(name, command, shell=True, cwd=path.parent, env=env, essential=True)
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}:{lineno}: {exc}") from None
    if not services:
        raise ConfigError(f"{path}: no processes defined")
    return Config(path, services)


_DOTENV_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


def parse_dotenv(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``export`` allowed, ``#`` comments, '' and "" quoting)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    out: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _DOTENV_LINE.match(line)
        if not m:
            raise ConfigError(f"{path}:{lineno}: expected KEY=VALUE, got {raw!r}")
        key, value = m.group(1), m.group(2)
        if value[:1] in ("'", '"'):
            quote = value[0]
            end = value.find(quote, 1)
            if end < 0:
                raise ConfigError(f"{path}:{lineno}: unterminated {quote} quote")
            inner = value[1:end]
            if quote == '"':
                inner = inner.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
            value = inner
        else:
            value = re.sub(r"\s+#.*$", "", value).strip()
        out[key] = value
    return out


# ----------------------------------------------------------------------- aioproc.toml


def _load_toml(path: Path, text: str) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
        if m:
            msg = msg[: m.start()]
            raise ConfigError(f"{path}:{m.group(1)}:{m.group(2)}: {msg}") from None
        raise ConfigError(f"{path}: {msg}") from None
    lines = _Lines(path, text)
    for key in data:
        if key not in ("services", "supervisor"):
            raise ConfigError(
                f"{lines.at(key)}: unknown table or key {key!r} (expected [services.NAME] "
                "tables and an optional [supervisor] table)"
            )
    shutdown_timeout = 30.0
    sup = data.get("supervisor", {})
    if not isinstance(sup, dict):
        raise ConfigError(f"{lines.at('supervisor')}: [supervisor] must be a table")
    for key, value in sup.items():
        if key != "shutdown_timeout":
            raise ConfigError(
                f"{lines.at(key, 'supervisor')}: [supervisor]: unknown option {key!r}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(
                f"{lines.at(key, 'supervisor')}: shutdown_timeout must be a number of seconds"
            )
        shutdown_timeout = float(value)
    services_table = data.get("services")
    if not isinstance(services_table, dict) or not services_table:
        raise ConfigError(f"{path}: no services defined (add a [services.NAME] table)")
    services = []
    for name, table in services_table.items():
        where = f"{lines.at(None, 'services.' + name)}: service {name!r}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
        services.append(_service_from_toml(path, lines, name, table, where))
    return Config(path, services, shutdown_timeout)


class _Lines:
    """Finds the line of a table header or a key in the TOML text, for messages."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def _header(self, table: str) -> int | None:
        parts = [re.escape(p) for p in table.split(".")]
        quoted = r"\s*\.\s*".join(rf"(?:{p}|\"{p}\"|'{p}')" for p in parts)
        pattern = re.compile(rf"^\s*\[\s*{quoted}\s*\]")
        for i, line in enumerate(self.lines):
            if pattern.match(line):
                return i
        return None

    def at(self, key: str | None, table: str | None = None) -> str:
        start = 0
        if table is not None:
            found = self._header(table)
            if found is None:
                return str(self.path)
            start = found
            if key is None:
                return f"{self.path}:{start + 1}"
        if key is not None:
            pattern = re.compile(rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\")\s*=")
            for i in range(start + (1 if table else 0), len(self.lines)):
                line = self.lines[i]
                if table is not None and i > start and re.match(r"^\s*\[", line):
                    break
                if pattern.match(line):
                    return f"{self.path}:{i + 1}"
        return str(self.path) if table is None else f"{self.path}:{start + 1}"


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number of seconds, not {value!r}")
    return float(value)


def _signal(value: Any, what: str) -> signal.Signals:
    if isinstance(value, str):
        name = value.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        try:
            return signal.Signals[name]
        except KeyError:
            raise ValueError(f"{what}: unknown signal {value!r}") from None
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return signal.Signals(value)
        except ValueError:
            raise ValueError(f"{what}: {value} is not a signal number") from None
    raise ValueError(f"{what} must be a signal name like 'SIGTERM', not {value!r}")


def _table(value: Any, what: str, keys: Iterable[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a table, like {what} = {{ ... }}")
    allowed = list(keys)
    for key in value:
        if key not in allowed:
            raise ValueError(f"{what}: unknown key {key!r} (expected {', '.join(allowed)})")
    return value


def _ready(value: Any, what: str = "ready") -> Any:
    """A readiness check from its table; with ``what="liveness"``, only those that probe."""
    probing = what != "ready"
    kinds = ("tcp", "http", "exec") if probing else ("tcp", "http", "exec", "line", "notify")
    knobs = _LIVENESS_KNOBS if probing else ("timeout", "interval", "watchdog")
    table = _table(value, what, (*kinds, "body", "stop_timeout", *knobs))
    chosen = [k for k in kinds if k in table]
    if len(chosen) != 1:
        raise ValueError(f"{what} needs exactly one of {', '.join(kinds)}")
    kind = chosen[0]
    kw: dict[str, Any] = {}
    if "timeout" in table and not probing:
        kw["timeout"] = _seconds(table["timeout"], "ready.timeout")
    if "interval" in table:
        if kind not in ("tcp", "http", "exec"):
            raise ValueError(f"ready.interval only applies to tcp, http and exec, not {kind}")
        kw["interval"] = _seconds(table["interval"], "ready.interval")
    if "watchdog" in table:
        if kind != "notify":
            raise ValueError("ready.watchdog only applies to notify")
        kw["watchdog"] = _seconds(table["watchdog"], "ready.watchdog")
    if "body" in table:
        if kind != "http" or not isinstance(table["body"], str):
            raise ValueError(f"{what}.body is a regular expression string, for http only")
        try:
            kw["body"] = re.compile(table["body"])
        except re.error as exc:
            raise ValueError(f"{what}.body: bad regular expression: {exc}") from None
    if "stop_timeout" in table:
        if kind != "exec":
            raise ValueError(f"{what}.stop_timeout only applies to exec")
        kw["stop_timeout"] = _seconds(table["stop_timeout"], f"{what}.stop_timeout")
    target = table[kind]
    if kind == "tcp":
        if not isinstance(target, str) or ":" not in target:
            raise ValueError(f'{what}.tcp must be "HOST:PORT", like "127.0.0.1:8000"')
        host, _, port = target.rpartition(":")
        if not port.isdigit():
            raise ValueError(f"{what}.tcp: {port!r} is not a port number")
        return ReadyTCP(host.strip("[]") or "127.0.0.1", int(port), **kw)
    if kind == "http":
        if not isinstance(target, str):
            raise ValueError(f"{what}.http must be a URL string")
        return ReadyHTTP(target, **kw)
    if kind == "exec":
        if isinstance(target, str):
            raise ValueError(f'{what}.exec is an argv list, like ["pg_isready", "-q"]')
        return ReadyExec(_strings(target, f"{what}.exec"), **kw)
    if kind == "line":
        if not isinstance(target, str):
            raise ValueError("ready.line must be a regular expression string")
        try:
            return ReadyLine(target, **kw)
        except re.error as exc:
            raise ValueError(f"ready.line: bad regular expression: {exc}") from None
    if target is not True:
        raise ValueError("ready.notify must be true")
    return ReadyNotify(**kw)


_LIVENESS_KNOBS = ("initial_delay", "period", "timeout", "failure_threshold", "success_threshold")


def _liveness(value: Any) -> Liveness:
    """``liveness = { http = "...", period = 5, failure_threshold = 3, ... }``."""
    check = _ready(value, "liveness")
    knobs: dict[str, Any] = {}
    for key in _LIVENESS_KNOBS:
        if key in value:
            item = value[key]
            if key.endswith("threshold"):
                if isinstance(item, bool) or not isinstance(item, int):
                    raise ValueError(f"liveness.{key} must be an int")
                knobs[key] = item
            else:
                knobs[key] = _seconds(item, f"liveness.{key}")
    return Liveness(check, **knobs)


def _codes(value: Any, what: str) -> list[int]:
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list of exit codes and signal names")
    out: list[int] = []
    for item in value:
        if isinstance(item, str):
            out.append(_signal(item, what))
        elif isinstance(item, int) and not isinstance(item, bool):
            out.append(item)
        else:
            raise ValueError(f"{what}: {item!r} is neither an exit code nor a signal name")
    return out


def _strings(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of strings")
    return list(value)


def _env(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError('env must be a table, like env = { PORT = "8000" }')
    out = {}
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise ValueError(f"env.{key} must be a string")
        out[key] = str(item)
    return out


def _service_from_toml(
    path: Path, lines: _Lines, name: str, table: Mapping[str, Any], where: str
) -> Service:
    known = ("command", "argv", *SERVICE_OPTIONS)
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            line = lines.at(key, f"services.{name}")
            raise ConfigError(f"{line}: service {name!r}: unknown option {key!r}{hint}")
    if ("command" in table) == ("argv" in table):
        raise ConfigError(f"{where}: needs a 'command' (run by the shell) or an 'argv' list")
    kw: dict[str, Any] = {}
    base = path.parent
    try:
        if "command" in table:
            argv: Any = table["command"]
            if not isinstance(argv, str) or not argv.strip():
                raise ValueError("command must be a non-empty string")
            kw["shell"] = True
        else:
            argv = table["argv"]
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                raise ValueError("argv must be a non-empty list of strings")
        for key, value in table.items():
            if key in ("command", "argv"):
                continue
            if key == "backoff":
                kw[key] = Backoff(**_table(value, key, ("initial", "factor", "max", "jitter")))
            elif key == "start_limit":
                kw[key] = StartLimit(**_table(value, key, ("burst", "interval")))
            elif key in ("stable_after", "stop_timeout"):
                kw[key] = _seconds(value, key)
            elif key == "depends_on":
                kw[key] = _strings(value, key)
            elif key == "ready":
                kw[key] = _ready(value)
            elif key == "liveness":
                kw[key] = _liveness(value)
            elif key == "cgroup":
                if not isinstance(value, (bool, str)) or (
                    isinstance(value, str) and value != "auto" and not value.startswith("/")
                ):
                    raise ValueError('cgroup must be true, "auto" or an absolute cgroup path')
                kw[key] = value
            elif key in ("essential", "kill_group"):
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false")
                kw[key] = value
            elif key == "stop_signal":
                kw[key] = _signal(value, key)
            elif key == "env":
                kw[key] = _env(value)
            elif key == "cwd":
                if not isinstance(value, str):
                    raise ValueError("cwd must be a path string")
                kw[key] = base / value
            elif key == "output":
                if not isinstance(value, str) or not value:
                    raise ValueError('output must be "prefix", "inherit" or a file path')
                kw[key] = value if value in ("prefix", "inherit") else str(base / value)
            elif key in ("success_exit_codes", "restart_exit_codes"):
                kw[key] = _codes(value, key)
            elif key == "rlimits":
                try:
                    check_rlimits(value)
                except (TypeError, ValueError, PermissionError) as exc:
                    line = lines.at(key, f"services.{name}")
                    raise ConfigError(f"{line}: service {name!r}: {exc}") from None
                kw[key] = value
            elif key == "umask":
                if isinstance(value, str):
                    value = int(value, 8)
                kw[key] = value
            else:  # restart, user, group: Service checks them
                kw[key] = value
        kw.setdefault("cwd", base)
        return Service(name, argv, **kw)
    except (TypeError, ValueError) as exc:
        msg = str(exc).replace(f"service {name!r}: ", "")
        raise ConfigError(f"{where}: {msg}") from None

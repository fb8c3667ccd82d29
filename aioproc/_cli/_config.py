"""Reading ``aioproc run``'s configuration: a Procfile (+ ``.env``) or an ``aioproc.toml``.

Every problem is a :class:`ConfigError` whose message is one line naming the file and
the line or the service: ``Procfile:3: expected 'name: command'``,
``aioproc.toml:12: service 'web': unknown option 'restrt' (did you mean 'restart'?)``.
For an ``aioproc.toml`` the line is that of the offending key (``backoff.initial``,
not ``[services.web]``), found again in the text: best effort, see
``_toml_lines.py``. Nothing is started before the whole file has been checked,
and what can be checked then is: users and groups exist, environment names have
no ``=`` or NUL, numbers are finite and in range (durations at most
:data:`MAX_SECONDS`), values are not nested too deeply.
"""

from __future__ import annotations

import dataclasses
import difflib
import grp
import math
import os
import pwd
import re
import signal
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ..supervisor import (
    Backoff,
    ReadyHTTP,
    ReadyLine,
    ReadyNotify,
    ReadyTCP,
    Service,
    StartLimit,
    Supervisor,
)
from ._toml_lines import KeyLines

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = ["MAX_SECONDS", "Config", "ConfigError", "find_config", "load_config", "parse_dotenv"]

#: The longest duration a configuration may give (about 31 years): past it, event
#: loops overflow their timers (uvloop counts milliseconds in 64 bits).
MAX_SECONDS = 1e9
#: uid_t and gid_t are 32 bits, and -1 (2**32 - 1) means "unchanged".
_MAX_ID = 2**32 - 2

CONFIG_NAMES = ("aioproc.toml", "Procfile")

#: The options of ``[services.NAME]`` besides ``command``/``argv``.
SERVICE_OPTIONS = (
    "restart",
    "backoff",
    "start_limit",
    "stable_after",
    "depends_on",
    "ready",
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
)


class ConfigError(Exception):
    """A configuration that cannot be run; ``str()`` is the one-line message.

    One line whatever the file holds: a character that would break it (a newline,
    U+2028...) or that a terminal acts on is shown escaped, as ``repr`` would.
    """

    def __init__(self, message: str) -> None:
        if not message.isprintable():
            message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        super().__init__(message)


class _Bad(ValueError):
    """A bad value at ``path`` (keys below the option being read), for the line."""

    def __init__(self, path: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


def _show(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut short: a message stays one readable line."""
    try:
        text = repr(value)
    except RecursionError:  # pragma: no cover - tomllib's nesting limit comes first
        text = f"<a deeply nested {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        if "\0" in command:
            raise ConfigError(f"{path}:{lineno}: process {name!r}: a NUL character in the command")
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
        if "\0" in value:
            raise ConfigError(f"{path}:{lineno}: {key}: a NUL character cannot be in a value")
        out[key] = value
    return out


# ----------------------------------------------------------------------- aioproc.toml


def _load_toml(path: Path, text: str) -> Config:
    try:
        data = tomllib.loads(text)
    except RecursionError:
        line, key = _deepest(text)
        what = f" (key {key!r})" if key else ""
        raise ConfigError(f"{path}:{line}: a value is nested too deeply{what}") from None
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
        if m:
            msg = msg[: m.start()]
            raise ConfigError(f"{path}:{m.group(1)}:{m.group(2)}: {msg}") from None
        raise ConfigError(f"{path}: {msg}") from None
    lines = KeyLines(text)

    def at(table: tuple[str, ...], keys: tuple[str, ...] = ()) -> str:
        line = lines.find(table, keys)
        return str(path) if line is None else f"{path}:{line}"

    for key in data:
        if key not in ("services", "supervisor"):
            raise ConfigError(
                f"{at((), (key,))}: unknown table or key {key!r} (expected [services.NAME] "
                "tables and an optional [supervisor] table)"
            )
    shutdown_timeout = 30.0
    sup = data.get("supervisor", {})
    if not isinstance(sup, dict):
        raise ConfigError(f"{at((), ('supervisor',))}: [supervisor] must be a table")
    for key, value in sup.items():
        where = at(("supervisor",), (key,))
        if key != "shutdown_timeout":
            raise ConfigError(f"{where}: [supervisor]: unknown option {key!r}")
        try:
            shutdown_timeout = _seconds(value, "shutdown_timeout")
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    services_table = data.get("services")
    if not isinstance(services_table, dict) or not services_table:
        raise ConfigError(f"{path}: no services defined (add a [services.NAME] table)")
    services = []
    for name, table in services_table.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{at(('services',), (name,))}: service {name!r}: must be a table")
        services.append(_service_from_toml(path, at, name, table))
    return Config(path, services, shutdown_timeout)


def _deepest(text: str) -> tuple[int, str | None]:
    """Where the nesting of ``[`` and ``{`` is deepest (strings skipped, roughly): line, key."""
    depth = best = 0
    best_line = 1
    quote = ""
    for lineno, line in enumerate(text.splitlines(), 1):
        for ch in line:
            if quote:
                if ch == quote:
                    quote = ""
            elif ch in "\"'":
                quote = ch
            elif ch in "[{":
                depth += 1
                if depth > best:
                    best, best_line = depth, lineno
            elif ch in "]}":
                depth = max(0, depth - 1)
            elif ch == "#":
                break
    m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*=", text.splitlines()[best_line - 1] if text else "")
    return best_line, m.group(1) if m else None


def _seconds(value: Any, what: str) -> float:
    """A duration: a finite number of seconds, 0 to :data:`MAX_SECONDS`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number of seconds, not {_show(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number of seconds, not {value}")
    if not 0 <= value <= MAX_SECONDS:
        raise ValueError(f"{what} must be between 0 and {MAX_SECONDS:g} seconds, not {value}")
    return float(value)


def _number(value: Any, what: str, low: float, high: float) -> float:
    """A finite number in [low, high] (the policy classes check their own rules after)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, not {_show(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, not {value}")
    if not low <= value <= high:
        raise ValueError(f"{what} must be between {low:g} and {high:g}, not {value}")
    return float(value)


def _integer(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, not {_show(value)}")
    if not low <= value <= high:
        raise ValueError(f"{what} must be between {low} and {high}, not {value}")
    return value


def _signal(value: Any, what: str) -> signal.Signals:
    if isinstance(value, str):
        name = value.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        try:
            return signal.Signals[name]
        except KeyError:
            raise ValueError(f"{what}: unknown signal {_show(value)}") from None
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return signal.Signals(value)
        except ValueError:
            raise ValueError(f"{what}: {_show(value)} is not a signal number") from None
    raise ValueError(f"{what} must be a signal name like 'SIGTERM', not {_show(value)}")


def _table(value: Any, what: str, keys: Iterable[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a table, like {what} = {{ ... }}")
    allowed = list(keys)
    for key in value:
        if key not in allowed:
            raise _Bad((key,), f"{what}: unknown key {_show(key)} (expected {', '.join(allowed)})")
    return value


def _sub(what: str, table: dict[str, Any], key: str, check: Any, *args: Any) -> Any:
    """``check(table[key], "what.key", *args)``, its error located at ``key``."""
    try:
        return check(table[key], f"{what}.{key}", *args)
    except _Bad as exc:
        raise _Bad((key, *exc.path), str(exc)) from None
    except ValueError as exc:
        raise _Bad((key,), str(exc)) from None


def _backoff(value: Any) -> Backoff:
    table = _table(value, "backoff", ("initial", "factor", "max", "jitter"))
    kw = {}
    for key in table:
        high = 1.0 if key == "jitter" else 1e6 if key == "factor" else MAX_SECONDS
        kw[key] = _sub("backoff", table, key, _number, 0.0, high)
    return Backoff(**kw)


def _start_limit(value: Any) -> StartLimit:
    table = _table(value, "start_limit", ("burst", "interval"))
    kw: dict[str, Any] = {}
    if "burst" in table:
        kw["burst"] = _sub("start_limit", table, "burst", _integer, 1, 1_000_000)
    if "interval" in table:
        kw["interval"] = _sub("start_limit", table, "interval", _seconds)
    return StartLimit(**kw)


def _ready(value: Any) -> Any:
    kinds = ("tcp", "http", "line", "notify")
    table = _table(value, "ready", (*kinds, "timeout", "interval", "watchdog", "access"))
    chosen = [k for k in kinds if k in table]
    if len(chosen) != 1:
        raise ValueError(f"ready needs exactly one of {', '.join(kinds)}")
    kind = chosen[0]
    kw: dict[str, Any] = {}
    if "timeout" in table:
        kw["timeout"] = _sub("ready", table, "timeout", _seconds)
        if kw["timeout"] <= 0:
            raise _Bad(("timeout",), "ready.timeout must be positive")
    if "interval" in table:
        if kind not in ("tcp", "http"):
            raise _Bad(("interval",), f"ready.interval only applies to tcp and http, not {kind}")
        kw["interval"] = _sub("ready", table, "interval", _seconds)
    if "watchdog" in table:
        if kind != "notify":
            raise _Bad(("watchdog",), "ready.watchdog only applies to notify")
        kw["watchdog"] = _sub("ready", table, "watchdog", _seconds)
        if kw["watchdog"] <= 0:
            raise _Bad(("watchdog",), "ready.watchdog must be positive")
    if "access" in table:
        if kind != "notify":
            raise _Bad(("access",), "ready.access only applies to notify")
        if table["access"] not in ("main", "all"):
            raise _Bad(
                ("access",), f"ready.access must be 'main' or 'all', not {_show(table['access'])}"
            )
        kw["access"] = table["access"]
    target = table[kind]
    try:
        if kind == "tcp":
            if not isinstance(target, str) or ":" not in target:
                raise ValueError('ready.tcp must be "HOST:PORT", like "127.0.0.1:8000"')
            host, _, port = target.rpartition(":")
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"ready.tcp: {_show(port)} is not a port number")
            return ReadyTCP(host.strip("[]") or "127.0.0.1", int(port), **kw)
        if kind == "http":
            if not isinstance(target, str):
                raise ValueError("ready.http must be a URL string")
            return ReadyHTTP(target, **kw)
        if kind == "line":
            if not isinstance(target, str):
                raise ValueError("ready.line must be a regular expression string")
            try:
                return ReadyLine(target, **kw)
            except (re.error, RecursionError, OverflowError) as exc:
                raise ValueError(f"ready.line: bad regular expression: {exc}") from None
        if target is not True:
            raise ValueError("ready.notify must be true")
        return ReadyNotify(**kw)
    except ValueError as exc:
        raise _Bad((kind,), str(exc)) from None


def _codes(value: Any, what: str) -> list[int]:
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list of exit codes and signal names")
    out: list[int] = []
    for item in value:
        if isinstance(item, str):
            out.append(_signal(item, what))
        elif isinstance(item, int) and not isinstance(item, bool):
            out.append(_integer(item, f"{what}: an exit code", 0, 255))
        else:
            raise ValueError(f"{what}: {_show(item)} is neither an exit code nor a signal name")
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
        if not key or "=" in key or "\0" in key:
            raise _Bad((key,), f"env: {_show(key)} cannot be a variable name (empty, '=' or NUL)")
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise _Bad((key,), f"env.{key} must be a string")
        text = str(item)
        if "\0" in text:
            raise _Bad((key,), f"env.{key}: a NUL character cannot be in a value")
        out[key] = text
    return out


def _user(value: Any, what: str) -> str | int:
    """A user (``what="user"``) or group name that exists, or an id in range."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _integer(value, f"{what} id", 0, _MAX_ID)
    if not isinstance(value, str) or not value or "\0" in value:
        raise ValueError(f"{what} must be a name or a numeric id, not {_show(value)}")
    try:
        if what == "user":
            pwd.getpwnam(value)
        else:
            grp.getgrnam(value)
    except KeyError:
        database = "password" if what == "user" else "group"
        raise ValueError(f"unknown {what} {_show(value)}: not in the {database} database") from None
    return value


def _umask(value: Any) -> int:
    if isinstance(value, str):
        if not re.fullmatch(r"0?o?[0-7]{1,4}", value):
            raise ValueError(f"umask must be octal digits like '022', not {_show(value)}")
        value = int(value.replace("o", ""), 8)
    return _integer(value, "umask", 0, 0o777)


def _service_from_toml(
    path: Path, at: Callable[..., str], name: str, table: Mapping[str, Any]
) -> Service:
    where = f"{at(('services', name))}: service {name!r}"
    known = ("command", "argv", *SERVICE_OPTIONS)
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            line = at(("services", name), (key,))
            raise ConfigError(f"{line}: service {name!r}: unknown option {_show(key)}{hint}")
    if ("command" in table) == ("argv" in table):
        raise ConfigError(f"{where}: needs a 'command' (run by the shell) or an 'argv' list")
    kw: dict[str, Any] = {}
    base = path.parent
    for key, value in table.items():
        try:
            if key == "command":
                if not isinstance(value, str) or not value.strip() or "\0" in value:
                    raise ValueError("command must be a non-empty string (no NUL)")
                argv: Any = value
                kw["shell"] = True
            elif key == "argv":
                if (
                    not isinstance(value, list)
                    or not value
                    or not all(isinstance(a, str) and "\0" not in a for a in value)
                ):
                    raise ValueError("argv must be a non-empty list of strings (no NUL)")
                argv = value
            elif key == "backoff":
                kw[key] = _backoff(value)
            elif key == "start_limit":
                kw[key] = _start_limit(value)
            elif key in ("stable_after", "stop_timeout"):
                kw[key] = _seconds(value, key)
            elif key == "depends_on":
                kw[key] = _strings(value, key)
            elif key == "ready":
                kw[key] = _ready(value)
            elif key in ("essential", "kill_group"):
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false")
                kw[key] = value
            elif key == "stop_signal":
                kw[key] = _signal(value, key)
            elif key == "env":
                kw[key] = _env(value)
            elif key == "cwd":
                if not isinstance(value, str) or "\0" in value:
                    raise ValueError("cwd must be a path string")
                kw[key] = base / value
            elif key == "output":
                if not isinstance(value, str) or not value or "\0" in value:
                    raise ValueError('output must be "prefix", "inherit" or a file path')
                kw[key] = value if value in ("prefix", "inherit") else str(base / value)
            elif key in ("success_exit_codes", "restart_exit_codes"):
                kw[key] = _codes(value, key)
            elif key == "umask":
                kw[key] = _umask(value)
            elif key in ("user", "group"):
                kw[key] = _user(value, key)
            else:  # restart: Service checks it
                kw[key] = value
        except _Bad as exc:
            raise ConfigError(
                f"{at(('services', name), (key, *exc.path))}: service {name!r}: {exc}"
            ) from None
        except (TypeError, ValueError) as exc:
            msg = str(exc).replace(f"service {name!r}: ", "")
            raise ConfigError(
                f"{at(('services', name), (key,))}: service {name!r}: {msg}"
            ) from None
    kw.setdefault("cwd", base)
    try:
        return Service(name, argv, **kw)
    except (TypeError, ValueError) as exc:
        msg = str(exc).replace(f"service {name!r}: ", "")
        raise ConfigError(f"{where}: {msg}") from None

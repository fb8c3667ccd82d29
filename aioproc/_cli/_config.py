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

from .._limits import check_rlimits
from .._sizes import parse_size
from .._util import is_number
from ..supervisor import (
    DEPENDENCY_CONDITIONS,
    Backoff,
    Liveness,
    LogFile,
    ReadyExec,
    ReadyHTTP,
    ReadyLine,
    ReadyNotify,
    ReadyTCP,
    Service,
    StartLimit,
    Supervisor,
)
from ._envfile import merge_env_files, read_env_file
from ._errors import ConfigError
from ._toml_lines import KeyLines

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "MAX_SECONDS",
    "Config",
    "ConfigError",
    "LoadOptions",
    "describe_config",
    "find_config",
    "load_config",
    "parse_dotenv",
]

#: The longest duration a configuration may give (about 31 years): past it, event
#: loops overflow their timers (uvloop counts milliseconds in 64 bits).
MAX_SECONDS = 1e9
#: The largest log file ``max_bytes`` (a file offset is 63 bits).
LOG_MAX_BYTES = 2**63 - 1
#: uid_t and gid_t are 32 bits, and -1 (2**32 - 1) means "unchanged".
_MAX_ID = 2**32 - 2

CONFIG_NAMES = ("aioproc.toml", "Procfile")

#: The parent-death signal ``aioproc run`` gives its services unless one says otherwise
#: (``pdeathsig = false`` in its table): if ``aioproc run`` itself is killed (SIGKILL,
#: the OOM killer), the kernel sends this to every service's process.
DEFAULT_PDEATHSIG = signal.SIGTERM

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
    "autostart",
    "stop_signal",
    "stop_timeout",
    "kill_group",
    "pdeathsig",
    "env",
    "cwd",
    "output",
    "success_exit_codes",
    "restart_exit_codes",
    "user",
    "group",
    "umask",
    "env_file",
    "replicas",
    "rlimits",
    "cgroup",
    "cgroup_limits",
)


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


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """What the command line adds to a configuration file (foreman's options).

    ``env_files``: environment files for every service (``--env-file``); None means
    the default, ``.env`` in the root directory of a Procfile. ``root``: the
    directory commands run in and relative paths start from (default: the file's
    directory). ``concurrency``: instances per process type (``all`` for the rest).
    ``port``: the base of the ``PORT`` each instance gets (a Procfile's default is
    ``PORT`` from the environment, then 5000; an aioproc.toml gets none without it).
    """

    only: tuple[str, ...] = ()
    env_files: tuple[Path, ...] | None = None
    root: Path | None = None
    concurrency: Mapping[str, int] = dataclasses.field(default_factory=dict)
    port: int | None = None


@dataclasses.dataclass
class Config:
    path: Path
    services: list[Service]
    shutdown_timeout: float = 30.0
    #: The instance names of each replicated service (``web`` -> ``web.1``, ``web.2``).
    instances: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    #: The options it was read with (``--only`` included), to read it again on reload.
    options: LoadOptions = dataclasses.field(default_factory=LoadOptions)
    #: ``[supervisor] http``: serve HTTP there (``HOST:PORT``), and with this token.
    http: str | None = None
    http_token: str | None = None
    #: Where ``http`` is set (``file:line``), for errors about it.
    http_where: str = ""
    #: ``[supervisor] timestamps``, ``log_format``, ``mark_stderr``: the console's form
    #: (``Supervisor`` keywords), unless the command line says otherwise.
    console: dict[str, Any] = dataclasses.field(default_factory=dict)

    def supervisor(self, **kwargs: Any) -> Supervisor:
        """The supervisor of these services; ``kwargs`` that are None are left to the file."""
        given = {key: value for key, value in kwargs.items() if value is not None}
        options = {**self.console, **given}
        return Supervisor(self.services, shutdown_timeout=self.shutdown_timeout, **options)


def find_config(directory: Path) -> Path:
    """``aioproc.toml``, else ``Procfile``, in ``directory``."""
    for name in CONFIG_NAMES:
        path = directory / name
        if path.is_file():
            return path
    raise ConfigError(f"no aioproc.toml or Procfile in {directory}")


#: How many instances of one service at most (a typo must not fork thousands).
MAX_REPLICAS = 1000


def load_config(path: Path, only: Iterable[str] = (), options: LoadOptions | None = None) -> Config:
    """Read and check ``path``; with ``only``, keep those services and their dependencies."""
    opts = LoadOptions() if options is None else options
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    toml = path.suffix == ".toml"
    config = _load_toml(path, text, opts) if toml else _load_procfile(path, text, opts)
    config.options = dataclasses.replace(opts, only=(*only, *opts.only))
    config.services = _select(path, config, list(config.options.only))
    try:
        # Checks names, dependencies and cycles; starts nothing.
        config.supervisor()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config


def _select(path: Path, config: Config, only: list[str]) -> list[Service]:
    services = config.services
    if not only:
        return services
    by_name = {s.name: s for s in services}
    wanted: list[str] = []
    todo = list(only)
    while todo:
        name = todo.pop(0)
        if name not in by_name and name in config.instances:
            # A replicated service is named by its type: all its instances.
            todo[:0] = config.instances[name]
            continue
        if name not in by_name:
            raise ConfigError(f"{path}: --only: no service named {name!r}")
        if name not in wanted:
            wanted.append(name)
            todo.extend(by_name[name].depends_on)
    return [s for s in services if s.name in wanted]


# ----------------------------------------------------------------------- replicas


def _instances(
    path: Path, names: list[str], counts: Mapping[str, int], replicas: Mapping[str, int]
) -> dict[str, list[str]]:
    """Each service's instance names: ``web`` alone, or ``web.1`` ... ``web.N``."""
    unknown = sorted(set(counts) - set(names) - {"all"})
    if unknown:
        raise ConfigError(f"{path}: --concurrency: no process named {unknown[0]!r}")
    out: dict[str, list[str]] = {}
    for name in names:
        n = counts.get(name, counts.get("all", replicas.get(name, 1)))
        if n > MAX_REPLICAS:
            raise ConfigError(f"{path}: {name}: at most {MAX_REPLICAS} instances, not {n}")
        out[name] = [name] if n == 1 else [f"{name}.{i}" for i in range(1, n + 1)]
    return out


def _instance_env(
    path: Path, names: list[str], name: str, instance: int, port: int | None
) -> dict[str, str]:
    """What foreman gives an instance: ``PS``, and ``PORT`` = base + 100 per process
    type (in file order) + 1 per instance; and ``AIOPROC_INSTANCE``."""
    env = {"PS": f"{name}.{instance}", "AIOPROC_INSTANCE": str(instance)}
    if port is not None:
        value = port + 100 * names.index(name) + instance - 1
        if value > 65535:
            raise ConfigError(f"{path}: {name}.{instance}: PORT {value} is past 65535")
        env["PORT"] = str(value)
    return env


def _port_number(value: str, what: str) -> int:
    if not is_number(value) or not 0 < int(value) <= 65535:
        raise ConfigError(f"{what}: PORT must be a port number, not {value!r}")
    return int(value)


def _file_env(files: Iterable[Path]) -> dict[str, str]:
    # The real environment wins, so that ``PORT=9000 aioproc run`` overrides a file.
    return {k: v for k, v in merge_env_files(files).items() if k not in os.environ}


# ----------------------------------------------------------------------- Procfile

# foreman's and honcho's names ([A-Za-z0-9_-]+, so ``-foo_bar`` too), and dots.
_PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-][A-Za-z0-9_.-]*)\s*:\s*(.*)$")


def _load_procfile(path: Path, text: str, opts: LoadOptions) -> Config:
    """honcho/foreman format: ``name: command`` lines, run by /bin/sh, in the root
    directory (the file's by default), with the variables of the environment files
    (``.env`` in the root directory by default) added to the environment (those not
    set already). Every process is essential (as in foreman: when one ends for good,
    all stop); otherwise each has the Service defaults. Each instance gets ``PS`` and
    ``PORT`` as foreman gives them."""
    base = path.parent if opts.root is None else opts.root
    if opts.env_files is not None:
        files: list[Path] = list(opts.env_files)
    else:
        files = [base / ".env"] if (base / ".env").is_file() else []
    env = _file_env(files)
    entries: list[tuple[int, str, str]] = []
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
        entries.append((lineno, name, command))
    if not entries:
        raise ConfigError(f"{path}: no processes defined")
    names = [name for _, name, _ in entries]
    instances = _instances(path, names, opts.concurrency, {})
    port = opts.port
    if port is None:
        given = os.environ.get("PORT", env.get("PORT"))
        port = 5000 if given is None else _port_number(given, str(path))
    services: list[Service] = []
    for lineno, name, command in entries:
        for i, instance in enumerate(instances[name], 1):
            extra = _instance_env(path, names, name, i, port)
            try:
                services.append(
                    Service(
                        instance,
                        command,
                        shell=True,
                        cwd=base,
                        env={**env, **extra},
                        essential=True,
                        pdeathsig=DEFAULT_PDEATHSIG,
                    )
                )
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{path}:{lineno}: {exc}") from None
    if not services:
        raise ConfigError(f"{path}: no processes to run (every --concurrency is 0)")
    replicated = {name: names for name, names in instances.items() if names != [name]}
    return Config(path, services, instances=replicated)


# python-dotenv reads them now; the old name stays for the callers that know it.
parse_dotenv = read_env_file


# ----------------------------------------------------------------------- aioproc.toml


def _load_toml(path: Path, text: str, opts: LoadOptions) -> Config:
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
        if key not in ("services", "supervisor", "env", "env_file"):
            raise ConfigError(
                f"{at((), (key,))}: unknown table or key {key!r} (expected [services.NAME] "
                "tables, an optional [supervisor] table, env and env_file)"
            )
    shutdown_timeout = 30.0
    sup = data.get("supervisor", {})
    if not isinstance(sup, dict):
        raise ConfigError(f"{at((), ('supervisor',))}: [supervisor] must be a table")
    http: str | None = None
    http_token: str | None = None
    console: dict[str, Any] = {}
    for key, value in sup.items():
        where = at(("supervisor",), (key,))
        if key == "http":
            if not isinstance(value, str) or "\0" in value:
                raise ConfigError(f'{where}: http must be a string like "127.0.0.1:9100"')
            http = value  # checked as HOST:PORT by `aioproc run`, naming this line
            continue
        if key == "http_token":
            if not isinstance(value, str) or not value or "\0" in value:
                raise ConfigError(f"{where}: http_token must be a non-empty string")
            http_token = value
            continue
        if key in ("timestamps", "log_format", "mark_stderr"):
            console[key] = _console_option(key, value, where)
            continue
        if key != "shutdown_timeout":
            raise ConfigError(f"{where}: [supervisor]: unknown option {key!r}")
        try:
            shutdown_timeout = _seconds(value, "shutdown_timeout")
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    services_table = data.get("services")
    if not isinstance(services_table, dict) or not services_table:
        raise ConfigError(f"{path}: no services defined (add a [services.NAME] table)")
    ctx = _TomlContext(path, at, opts)
    ctx.read_globals(data)
    replicas: dict[str, int] = {}
    for name, table in services_table.items():
        if isinstance(table, dict) and "replicas" in table:
            replicas[name] = _replicas(table["replicas"], at, name)
    ctx.names = list(services_table)
    ctx.instances = _instances(path, ctx.names, opts.concurrency, replicas)
    services = []
    for name, table in services_table.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{at(('services',), (name,))}: service {name!r}: must be a table")
        services.extend(_service_from_toml(ctx, name, table))
    replicated = {name: names for name, names in ctx.instances.items() if names != [name]}
    config = Config(path, services, shutdown_timeout, instances=replicated)
    config.http, config.http_token = http, http_token
    config.console = console
    if http is not None:
        config.http_where = at(("supervisor",), ("http",))
    return config


def _console_option(key: str, value: Any, where: str) -> Any:
    """``[supervisor] timestamps``, ``log_format`` or ``mark_stderr``, checked."""
    if key == "timestamps":
        if value is True:
            return "clock"
        if value is False:
            return None
        if value in ("clock", "iso"):
            return value
        raise ConfigError(f'{where}: timestamps must be true, false, "clock" or "iso"')
    if key == "log_format":
        if value in ("text", "json"):
            return value
        raise ConfigError(f'{where}: log_format must be "text" or "json"')
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false")
    return value


def _replicas(value: Any, at: Callable[..., str], name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REPLICAS:
        raise ConfigError(
            f"{at(('services', name), ('replicas',))}: service {name!r}: replicas must be "
            f"a whole number from 1 to {MAX_REPLICAS}, not {_show(value)}"
        )
    return value


class _TomlContext:
    """What every service of an aioproc.toml shares: the root directory, the
    variables of the global ``env_file``/``--env-file`` files and ``[env]``, the
    instance names of replicated services, and the ``--port`` base."""

    def __init__(self, path: Path, at: Callable[..., str], opts: LoadOptions) -> None:
        self.path = path
        self.at = at
        self.opts = opts
        self.base = path.parent if opts.root is None else opts.root
        self.file_env: dict[str, str] = {}
        self.env: dict[str, str] = {}
        self.names: list[str] = []
        self.instances: dict[str, list[str]] = {}

    def env_files(self, value: Any) -> list[Path]:
        """``env_file = "a.env"`` or a list, relative to the file's directory."""
        names = _strings(value, "env_file")
        if any("\0" in name for name in names):
            raise ValueError("env_file: a NUL character cannot be in a path")
        return [self.path.parent / name for name in names]

    def read_globals(self, data: Mapping[str, Any]) -> None:
        files: list[Path] = []
        try:
            if "env_file" in data:
                files = self.env_files(data["env_file"])
        except ValueError as exc:
            raise ConfigError(f"{self.at((), ('env_file',))}: {exc}") from None
        files.extend(self.opts.env_files or ())
        self.file_env = _file_env(files)
        if "env" in data:
            try:
                self.env = _env(data["env"])
            except _Bad as exc:
                raise ConfigError(f"{self.at(('env',), exc.path)}: {exc}") from None
            except ValueError as exc:
                raise ConfigError(f"{self.at((), ('env',))}: {exc}") from None

    def depends_on(self, deps: list[str] | dict[str, str]) -> list[str] | dict[str, str]:
        """A dependency on a replicated service is one on each of its instances
        (with the same condition)."""
        conditions = dict.fromkeys(deps, "ready") if isinstance(deps, list) else deps
        out: dict[str, str] = {}
        for dep, condition in conditions.items():
            instances = self.instances.get(dep, [dep])
            if not instances:
                raise ValueError(f"depends on {dep!r}, which runs no instance")
            out.update(dict.fromkeys(instances, condition))
        return list(out) if isinstance(deps, list) else out


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


def _ready(value: Any, what: str = "ready") -> Any:
    """A readiness check from its table; with ``what="liveness"``, only those that probe."""
    probing = what != "ready"
    kinds = ("tcp", "http", "exec") if probing else ("tcp", "http", "exec", "line", "notify")
    knobs = _LIVENESS_KNOBS if probing else ("timeout", "interval", "watchdog", "access")
    table = _table(value, what, (*kinds, "body", "stop_timeout", *knobs))
    chosen = [k for k in kinds if k in table]
    if len(chosen) != 1:
        raise ValueError(f"{what} needs exactly one of {', '.join(kinds)}")
    kind = chosen[0]
    kw: dict[str, Any] = {}
    if "timeout" in table and not probing:
        kw["timeout"] = _sub("ready", table, "timeout", _seconds)
        if kw["timeout"] <= 0:
            raise _Bad(("timeout",), "ready.timeout must be positive")
    if "interval" in table:
        if kind not in ("tcp", "http", "exec"):
            raise _Bad(
                ("interval",), f"{what}.interval only applies to tcp, http and exec, not {kind}"
            )
        kw["interval"] = _sub(what, table, "interval", _seconds)
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
    if "body" in table:
        if kind != "http" or not isinstance(table["body"], str):
            raise _Bad(("body",), f"{what}.body is a regular expression string, for http only")
        try:
            kw["body"] = re.compile(table["body"])
        except (re.error, RecursionError, OverflowError) as exc:
            raise _Bad(("body",), f"{what}.body: bad regular expression: {exc}") from None
    if "stop_timeout" in table:
        if kind != "exec":
            raise _Bad(("stop_timeout",), f"{what}.stop_timeout only applies to exec")
        kw["stop_timeout"] = _sub(what, table, "stop_timeout", _seconds)
    target = table[kind]
    try:
        if kind == "tcp":
            if not isinstance(target, str) or ":" not in target:
                raise ValueError(f'{what}.tcp must be "HOST:PORT", like "127.0.0.1:8000"')
            host, _, port = target.rpartition(":")
            if not is_number(port) or not 0 < int(port) < 65536:
                raise ValueError(f"{what}.tcp: {_show(port)} is not a port number")
            return ReadyTCP(host.strip("[]") or "127.0.0.1", int(port), **kw)
        if kind == "http":
            if not isinstance(target, str):
                raise ValueError(f"{what}.http must be a URL string")
            return ReadyHTTP(target, **kw)
        if kind == "exec":
            if isinstance(target, str):
                raise ValueError(f'{what}.exec is an argv list, like ["pg_isready", "-q"]')
            argv = _strings(target, f"{what}.exec")
            if not argv or any("\0" in a for a in argv):
                raise ValueError(f"{what}.exec must be a non-empty list of strings (no NUL)")
            return ReadyExec(argv, **kw)
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


_LIVENESS_KNOBS = ("initial_delay", "period", "timeout", "failure_threshold", "success_threshold")


def _liveness(value: Any) -> Liveness:
    """``liveness = { http = "...", period = 5, failure_threshold = 3, ... }``."""
    check = _ready(value, "liveness")
    knobs: dict[str, Any] = {}
    for key in _LIVENESS_KNOBS:
        if key in value:
            if key.endswith("threshold"):
                knobs[key] = _sub("liveness", value, key, _integer, 1, 1_000_000)
            else:
                knobs[key] = _sub("liveness", value, key, _seconds)
    return Liveness(check, **knobs)


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


def _depends_on(value: Any) -> list[str] | dict[str, str]:
    if not isinstance(value, dict):
        return _strings(value, "depends_on")
    for dep, condition in value.items():
        if condition not in DEPENDENCY_CONDITIONS:
            raise _Bad(
                (dep,),
                f"depends_on.{dep} must be one of "
                f"{', '.join(repr(c) for c in DEPENDENCY_CONDITIONS)}, not {condition!r}",
            )
    return dict(value)


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


def _output(value: Any, base: Path) -> str | LogFile:
    """``"prefix"``, ``"inherit"``, a path, or ``{ file = PATH, max_bytes = ..., backups = N }``.

    Paths are relative to the file's directory (``base``).
    """
    if isinstance(value, dict):
        table = _table(value, "output", ("file", "max_bytes", "backups"))
        if "file" not in table:
            raise ValueError('output needs a file, like output = { file = "web.log", ... }')
        path = _sub("output", table, "file", _path)
        kw: dict[str, int] = {}
        if "max_bytes" in table:
            kw["max_bytes"] = _sub("output", table, "max_bytes", _size)
        if "backups" in table:
            kw["backups"] = _sub("output", table, "backups", _integer, 0, 1_000_000)
        return LogFile(str(base / path), **kw)
    if not isinstance(value, str) or not value or "\0" in value:
        raise ValueError(
            'output must be "prefix", "inherit", a file path or a table like '
            '{ file = "web.log", max_bytes = "10M", backups = 5 }'
        )
    return value if value in ("prefix", "inherit") else str(base / value)


def _path(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or "\0" in value:
        raise ValueError(f"{what} must be a file path (a non-empty string, no NUL)")
    return value


def _size(value: Any, what: str) -> int:
    """A size in bytes: an int, or a string like ``"10M"`` (see ``aioproc/_sizes.py``)."""
    size = parse_size(value) if isinstance(value, str) else value
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= LOG_MAX_BYTES:
        raise ValueError(
            f'{what} must be a size in bytes, like 10485760 or "10M" (0: never rotate), '
            f"not {_show(value)}"
        )
    return size


def _umask(value: Any) -> int:
    if isinstance(value, str):
        if not re.fullmatch(r"0?o?[0-7]{1,4}", value):
            raise ValueError(f"umask must be octal digits like '022', not {_show(value)}")
        value = int(value.replace("o", ""), 8)
    return _integer(value, "umask", 0, 0o777)


def _service_from_toml(ctx: _TomlContext, name: str, table: Mapping[str, Any]) -> list[Service]:
    """The service of one ``[services.NAME]`` table: one, or its replicas."""
    path, at = ctx.path, ctx.at
    where = f"{at(('services', name))}: service {name!r}"
    known = ("command", "argv", *SERVICE_OPTIONS)
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            line = at(("services", name), (key,))
            raise ConfigError(f"{line}: service {name!r}: unknown option {_show(key)}{hint}")
    if "command" in table and "argv" in table:
        line = at(("services", name), ("argv",))
        raise ConfigError(
            f"{line}: service {name!r}: 'command' and 'argv' are exclusive: give one, not both"
        )
    if "command" not in table and "argv" not in table:
        raise ConfigError(f"{where}: needs a 'command' (run by the shell) or an 'argv' list")
    kw: dict[str, Any] = {}
    base = ctx.base
    files: list[Path] = []
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
                kw[key] = ctx.depends_on(_depends_on(value))
            elif key == "env_file":
                files = ctx.env_files(value)
            elif key == "replicas":
                continue  # read before, with every service's
            elif key == "pdeathsig":
                kw[key] = None if value is False else _signal(value, key)
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
            elif key in ("essential", "kill_group", "autostart"):
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
                kw[key] = _output(value, base)
            elif key in ("success_exit_codes", "restart_exit_codes"):
                kw[key] = _codes(value, key)
            elif key == "rlimits":
                try:
                    check_rlimits(value)
                except PermissionError as exc:  # raising a hard limit needs root
                    raise ValueError(str(exc)) from None
                kw[key] = value
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
    kw.setdefault("pdeathsig", DEFAULT_PDEATHSIG)
    env = {**ctx.file_env, **_file_env(files), **ctx.env, **kw.pop("env", {})}
    instances = ctx.instances[name]
    out = []
    try:
        for i, instance in enumerate(instances, 1):
            extra: dict[str, str] = {}
            if instances != [name] or ctx.opts.port is not None:
                extra = _instance_env(path, ctx.names, name, i, ctx.opts.port)
            # An explicit PORT in the file wins over the --port one.
            if "PORT" in env:
                extra.pop("PORT", None)
            out.append(Service(instance, argv, env={**env, **extra}, **kw))
        return out
    except (TypeError, ValueError) as exc:
        msg = str(exc).replace(f"service {name!r}: ", "")
        raise ConfigError(f"{where}: {msg}") from None


# ----------------------------------------------------------------------- aioproc check

#: Variables whose values ``aioproc check`` prints (the others may be secrets).
_SHOWN_VARIABLES = ("PORT", "PS", "AIOPROC_INSTANCE")


def describe_config(config: Config) -> str:
    """What ``aioproc check`` prints: each service as it would run."""
    count = len(config.services)
    out = [f"{config.path}: {count} services, shutdown_timeout {config.shutdown_timeout:g} s"]
    for service in config.services:
        argv = service.argv if isinstance(service.argv, str) else " ".join(map(str, service.argv))
        out.append(f"{service.name}")
        out.append(f"  {'command' if isinstance(service.argv, str) else 'argv'}: {argv}")
        out.append(f"  cwd: {service.cwd}")
        policy = f"restart {service.restart}" + (", essential" if service.essential else "")
        policy += "" if service.autostart else ", started on request (autostart false)"
        out.append(f"  {policy}")
        if service.depends_on:
            out.append(f"  depends_on: {', '.join(service.depends_on)}")
        if service.ready is not None:
            out.append(f"  ready: {service.ready!r}")
        env = service.env or {}
        if env:
            shown = [f"{k}={env[k]}" for k in _SHOWN_VARIABLES if env.get(k) is not None]
            hidden = sorted(k for k in env if k not in _SHOWN_VARIABLES)
            if hidden:
                also = "and " if shown else ""
                shown.append(f"{also}{', '.join(hidden)} (values not shown)")
            out.append(f"  env: {', '.join(shown)}")
    return "\n".join(out) + "\n"

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
from ._envfile import merge_env_files, read_env_file
from ._errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "Config",
    "ConfigError",
    "LoadOptions",
    "describe_config",
    "find_config",
    "load_config",
    "parse_dotenv",
]

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
    "env_file",
    "replicas",
)


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

    def supervisor(self, **kwargs: Any) -> Supervisor:
        return Supervisor(self.services, shutdown_timeout=self.shutdown_timeout, **kwargs)


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
    if not value.isdigit() or not 0 < int(value) <= 65535:
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
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
        if m:
            msg = msg[: m.start()]
            raise ConfigError(f"{path}:{m.group(1)}:{m.group(2)}: {msg}") from None
        raise ConfigError(f"{path}: {msg}") from None
    lines = _Lines(path, text)
    for key in data:
        if key not in ("services", "supervisor", "env", "env_file"):
            raise ConfigError(
                f"{lines.at(key)}: unknown table or key {key!r} (expected [services.NAME] "
                "tables, an optional [supervisor] table, env and env_file)"
            )
    shutdown_timeout = 30.0
    sup = data.get("supervisor", {})
    if not isinstance(sup, dict):
        raise ConfigError(f"{lines.at('supervisor')}: [supervisor] must be a table")
    http: str | None = None
    http_token: str | None = None
    for key, value in sup.items():
        where = lines.at(key, "supervisor")
        if key == "http":
            if not isinstance(value, str):
                raise ConfigError(f'{where}: http must be a string like "127.0.0.1:9100"')
            http = value  # checked as HOST:PORT by `aioproc run`, naming this line
            continue
        if key == "http_token":
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{where}: http_token must be a non-empty string")
            http_token = value
            continue
        if key != "shutdown_timeout":
            raise ConfigError(f"{where}: [supervisor]: unknown option {key!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{where}: shutdown_timeout must be a number of seconds")
        shutdown_timeout = float(value)
    services_table = data.get("services")
    if not isinstance(services_table, dict) or not services_table:
        raise ConfigError(f"{path}: no services defined (add a [services.NAME] table)")
    ctx = _TomlContext(path, lines, opts)
    ctx.read_globals(data)
    replicas: dict[str, int] = {}
    for name, table in services_table.items():
        if isinstance(table, dict) and "replicas" in table:
            replicas[name] = _replicas(table["replicas"], lines, name)
    ctx.names = list(services_table)
    ctx.instances = _instances(path, ctx.names, opts.concurrency, replicas)
    services = []
    for name, table in services_table.items():
        where = f"{lines.at(None, 'services.' + name)}: service {name!r}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
        services.extend(_service_from_toml(ctx, name, table, where))
    replicated = {name: names for name, names in ctx.instances.items() if names != [name]}
    config = Config(path, services, shutdown_timeout, instances=replicated)
    config.http, config.http_token = http, http_token
    if http is not None:
        config.http_where = lines.at("http", "supervisor")
    return config


def _replicas(value: Any, lines: _Lines, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REPLICAS:
        raise ConfigError(
            f"{lines.at('replicas', 'services.' + name)}: service {name!r}: replicas must be "
            f"a whole number from 1 to {MAX_REPLICAS}, not {value!r}"
        )
    return value


class _TomlContext:
    """What every service of an aioproc.toml shares: the root directory, the
    variables of the global ``env_file``/``--env-file`` files and ``[env]``, the
    instance names of replicated services, and the ``--port`` base."""

    def __init__(self, path: Path, lines: _Lines, opts: LoadOptions) -> None:
        self.path = path
        self.lines = lines
        self.opts = opts
        self.base = path.parent if opts.root is None else opts.root
        self.file_env: dict[str, str] = {}
        self.env: dict[str, str] = {}
        self.names: list[str] = []
        self.instances: dict[str, list[str]] = {}

    def env_files(self, value: Any, where: str) -> list[Path]:
        """``env_file = "a.env"`` or a list, relative to the file's directory."""
        try:
            names = _strings(value, "env_file")
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return [self.path.parent / name for name in names]

    def read_globals(self, data: Mapping[str, Any]) -> None:
        files: list[Path] = []
        if "env_file" in data:
            files = self.env_files(data["env_file"], self.lines.at("env_file"))
        files.extend(self.opts.env_files or ())
        self.file_env = _file_env(files)
        if "env" in data:
            try:
                self.env = _env(data["env"])
            except ValueError as exc:
                raise ConfigError(f"{self.lines.at('env')}: {exc}") from None

    def depends_on(self, names: list[str], where: str) -> list[str]:
        """A dependency on a replicated service is one on each of its instances."""
        out: list[str] = []
        for dep in names:
            instances = self.instances.get(dep, [dep])
            if not instances:
                raise ConfigError(f"{where}: depends on {dep!r}, which runs no instance")
            out.extend(instances)
        return out


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


def _ready(value: Any) -> Any:
    kinds = ("tcp", "http", "line", "notify")
    table = _table(value, "ready", (*kinds, "timeout", "interval", "watchdog"))
    chosen = [k for k in kinds if k in table]
    if len(chosen) != 1:
        raise ValueError(f"ready needs exactly one of {', '.join(kinds)}")
    kind = chosen[0]
    kw: dict[str, Any] = {}
    if "timeout" in table:
        kw["timeout"] = _seconds(table["timeout"], "ready.timeout")
    if "interval" in table:
        if kind not in ("tcp", "http"):
            raise ValueError(f"ready.interval only applies to tcp and http, not {kind}")
        kw["interval"] = _seconds(table["interval"], "ready.interval")
    if "watchdog" in table:
        if kind != "notify":
            raise ValueError("ready.watchdog only applies to notify")
        kw["watchdog"] = _seconds(table["watchdog"], "ready.watchdog")
    target = table[kind]
    if kind == "tcp":
        if not isinstance(target, str) or ":" not in target:
            raise ValueError('ready.tcp must be "HOST:PORT", like "127.0.0.1:8000"')
        host, _, port = target.rpartition(":")
        if not port.isdigit():
            raise ValueError(f"ready.tcp: {port!r} is not a port number")
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
        except re.error as exc:
            raise ValueError(f"ready.line: bad regular expression: {exc}") from None
    if target is not True:
        raise ValueError("ready.notify must be true")
    return ReadyNotify(**kw)


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
    ctx: _TomlContext, name: str, table: Mapping[str, Any], where: str
) -> list[Service]:
    """The service of one ``[services.NAME]`` table: one, or its replicas."""
    path, lines = ctx.path, ctx.lines
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
    base = ctx.base
    files: list[Path] = []
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
                kw[key] = ctx.depends_on(_strings(value, key), where)
            elif key == "env_file":
                files = ctx.env_files(value, where)
            elif key == "replicas":
                continue  # read before, with every service's
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
                if not isinstance(value, str):
                    raise ValueError("cwd must be a path string")
                kw[key] = base / value
            elif key == "output":
                if not isinstance(value, str) or not value:
                    raise ValueError('output must be "prefix", "inherit" or a file path')
                kw[key] = value if value in ("prefix", "inherit") else str(base / value)
            elif key in ("success_exit_codes", "restart_exit_codes"):
                kw[key] = _codes(value, key)
            elif key == "umask":
                if isinstance(value, str):
                    value = int(value, 8)
                kw[key] = value
            else:  # restart, user, group: Service checks them
                kw[key] = value
        kw.setdefault("cwd", base)
        env = {**ctx.file_env, **_file_env(files), **ctx.env, **kw.pop("env", {})}
        instances = ctx.instances[name]
        out = []
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
                shown.append(f"and {', '.join(hidden)} (values not shown)")
            out.append(f"  env: {', '.join(shown)}")
    return "\n".join(out) + "\n"

"""The ``aioproc`` command: ``aioproc run`` (a Procfile/aioproc.toml supervisor) and
``aioproc init`` (a PID 1 for containers). See ``docs/cli.md``.

``main(argv=None) -> int`` is the entry point (``[project.scripts]`` and
``python -m aioproc``); it returns the exit code: 2 for a usage or configuration
error (one line on stderr, nothing started).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from .._durations import check_duration

__all__ = ["main"]

_COLOR = {"auto": None, "always": True, "never": False}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aioproc",
        description="Run and supervise processes (aioproc run), or be a container's PID 1 "
        "(aioproc init).",
    )
    parser.add_argument("--version", action="version", version=f"aioproc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="supervise the services of a Procfile or an aioproc.toml",
        description="Start the services of FILE (default: ./aioproc.toml, else ./Procfile), "
        "restart them by their policies, and stop them all in reverse dependency order on "
        "SIGINT/SIGTERM (a second signal kills at once). Exit code: 0 when everything "
        "stopped cleanly, else that of the essential service that failed (128+N for "
        "signal N); 2 for a bad configuration.",
    )
    run.add_argument("file", nargs="?", metavar="FILE", help="a Procfile or an aioproc.toml")
    run.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAMES",
        help="run only these services (comma-separated; repeatable) and what they depend on",
    )
    run.add_argument(
        "--color",
        choices=sorted(_COLOR),
        default="auto",
        help="colour the name prefixes (auto: on a terminal, unless NO_COLOR is set)",
    )

    init = sub.add_parser(
        "init",
        help="run CMD as a container's init: forward signals, reap orphans",
        description="Run CMD as its init would: become a child subreaper (unless already "
        "PID 1), forward signals to CMD, reap orphaned processes, and when CMD exits, "
        "SIGTERM then SIGKILL whatever is left before exiting with CMD's exit code "
        "(128+N if signal N killed it).",
        usage="aioproc init [-h] [--group] [--grace SECONDS] [--verbose] -- CMD [ARGS...]",
    )
    init.add_argument(
        "-g",
        "--group",
        action="store_true",
        help="run CMD in its own process group and forward signals to the whole group",
    )
    init.add_argument(
        "--grace",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="after CMD exits, how long what is left gets between SIGTERM and SIGKILL (default: 5)",
    )
    init.add_argument("-v", "--verbose", action="store_true", help="log what init does")
    init.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD", help="the command to run")
    return parser


def _error(message: str) -> int:
    print(f"aioproc: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command == "run":
        return _command_run(args)
    if args.command == "init":
        cmd = list(args.cmd)
        if cmd[:1] == ["--"]:
            cmd = cmd[1:]
        if not cmd:
            return _error("init: no command given (aioproc init -- CMD ARGS...)")
        try:
            grace = check_duration(args.grace, "--grace")
        except ValueError as exc:  # NaN, infinite or negative: argparse's float() takes them
            return _error(f"init: {exc}")
        from ._init import main_init

        return main_init(cmd, args.group, grace, args.verbose)
    parser.print_help(sys.stderr)
    return 2


def _command_run(args: argparse.Namespace) -> int:
    from ._config import ConfigError, find_config, load_config
    from ._run import run_services

    only = [name.strip() for item in args.only for name in item.split(",") if name.strip()]
    try:
        path = Path(args.file) if args.file else find_config(Path.cwd())
        config = load_config(path, only)
    except ConfigError as exc:
        return _error(str(exc))
    return asyncio.run(run_services(config, _COLOR[args.color]))

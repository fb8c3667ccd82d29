"""``aioproc run``'s control endpoint: where its socket is, and what a reload does.

A reload (``aioproc ctl reload``, or SIGHUP) reads the configuration file again,
with the options it was first read with (``--only``, ``-e``, ``-c``...), and hands the services to
:meth:`Supervisor.reconfigure`: added ones start, removed ones stop, changed ones
restart, unchanged ones keep running, and ``shutdown_timeout`` takes its new value.
The rest of ``[supervisor]`` (``http``, ``http_token``, the console's form) is
read at start only: a reload that finds it changed says so, every time, until
``aioproc run`` is started again. A file that does not load changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..supervisor import Reconfigured, Supervisor
from ._config import Config, ConfigError, load_config

__all__ = ["make_reload"]


def make_reload(
    config: Config,
    sup: Supervisor,
    say: Callable[[str], None],
    with_ready: set[str],
) -> Callable[[], Awaitable[Reconfigured]]:
    """The reload coroutine function; a bad file raises ValueError (its one-line message)."""

    async def reload() -> Reconfigured:
        try:
            new = load_config(config.path, options=config.options)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        say(f"reloading {config.path.name}")
        result = await sup.reconfigure(new.services)
        sup.shutdown_timeout = new.shutdown_timeout
        with_ready.clear()
        with_ready.update(s.name for s in new.services if s.ready is not None)
        parts = [
            f"{key} {', '.join(names)}"
            for key, names in (
                ("added", result.added),
                ("removed", result.removed),
                ("restarted", result.changed),
            )
            if names
        ]
        say(f"reloaded: {'; '.join(parts) or 'nothing changed'}")
        unapplied = not_reloaded(config, new)
        if unapplied:
            say(
                f"[supervisor] {', '.join(unapplied)} changed in {config.path.name}: "
                "applied when aioproc run starts again"
            )
        return result

    return reload


def not_reloaded(running: Config, new: Config) -> list[str]:
    """The ``[supervisor]`` keys a reload cannot apply whose value ``new`` changes."""
    keys = [key for key in ("http", "http_token") if getattr(running, key) != getattr(new, key)]
    for key in sorted(running.console.keys() | new.console.keys()):
        if running.console.get(key) != new.console.get(key):
            keys.append(key)
    return keys

"""The command's configuration error, shared by the modules that read configuration."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(Exception):
    """A configuration that cannot be run; ``str()`` is the one-line message.

    One line whatever the file holds: a character that would break it (a newline,
    U+2028...) or that a terminal acts on is shown escaped, as ``repr`` would.
    """

    def __init__(self, message: str) -> None:
        if not message.isprintable():
            message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        super().__init__(message)

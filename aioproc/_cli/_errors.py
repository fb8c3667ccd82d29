"""The command's configuration error, shared by the modules that read configuration."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(Exception):
    """A configuration that cannot be run; ``str()`` is the one-line message."""

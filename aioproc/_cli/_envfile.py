"""Environment files (``.env``, ``env_file``, ``--env-file``), read with python-dotenv.

The grammar is python-dotenv's, the parser its users already know: ``KEY=VALUE``,
``export KEY=VALUE``, ``'single'`` and ``"double"`` quotes (escaped quotes and
``\\n``/``\\t`` in double quotes), values that span lines inside quotes, ``#``
comments, a UTF-8 byte-order mark, ``'quoted'`` keys, and bare ``KEY`` lines
(no value: the variable is left as the environment has it). ``${VAR}`` and
``${VAR:-default}`` expand as python-dotenv expands them: from the variables
defined earlier in the same file, then from aioproc's own environment.

python-dotenv skips a line it cannot parse with a logged warning; here such a
line is a :class:`ConfigError` naming the file and the line, so that a value is
never silently lost.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

from ._errors import ConfigError

__all__ = ["merge_env_files", "read_env_file"]

INSTALL_HINT = "pip install 'aioproc-linux[cli]'"


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of one environment file, in file order; bare keys left out."""
    try:
        from dotenv import dotenv_values
        from dotenv.parser import parse_stream
    except ImportError:  # pragma: no cover - installed with the cli extra
        raise ConfigError(
            f"{path}: reading environment files needs python-dotenv ({INSTALL_HINT})"
        ) from None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            # The binding's text starts with the blank lines before the bad one.
            lines = binding.original.string.splitlines() or [""]
            skip = next((i for i, line in enumerate(lines) if line.strip()), 0)
            raise ConfigError(
                f"{path}:{binding.original.line + skip}: expected KEY=VALUE (python-dotenv's "
                f"grammar), got {lines[skip]!r}"
            )
        if binding.key is not None and ("\0" in binding.key or "=" in binding.key):
            raise ConfigError(f"{path}:{binding.original.line}: bad variable name {binding.key!r}")
        if binding.value is not None and "\0" in binding.value:
            raise ConfigError(
                f"{path}:{binding.original.line}: the value of {binding.key} holds a NUL byte"
            )
    values = dotenv_values(stream=io.StringIO(text), interpolate=True)
    return {key: value for key, value in values.items() if value is not None}


def merge_env_files(paths: Iterable[Path]) -> dict[str, str]:
    """The variables of several files, a later file's value winning over an earlier one's."""
    merged: dict[str, str] = {}
    for path in paths:
        merged.update(read_env_file(path))
    return merged

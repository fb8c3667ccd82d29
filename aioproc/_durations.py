"""Durations: the one check for every time in seconds that aioproc takes.

A leaf module, stateless, importing nothing of aioproc's: the core, the
supervisor and the command line all use it.
"""

from __future__ import annotations

import math

__all__ = ["check_duration"]


def check_duration(
    value: object, name: str, *, positive: bool = False, finite: bool = True
) -> float:
    """``value`` as a number of seconds, or a clear error naming ``name``.

    The one check for every duration aioproc takes. A real number (not a
    bool), else :class:`TypeError`. :class:`ValueError` for NaN, always: it
    compares false with everything, so a NaN deadline never passes and a NaN
    timer breaks the order of asyncio's timer heap. Also for infinity where
    the value becomes a timer or a deadline (``finite``, the default; where a
    timeout is optional, None is how to say "none"), for a negative value,
    and for zero with ``positive``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float
        raise ValueError(f"{name} must be a finite number of seconds, not {value}") from None
    if math.isnan(seconds):
        raise ValueError(f"{name} must be a number of seconds, not NaN")
    if seconds < 0:
        raise ValueError(f"{name} must not be negative")
    if positive and seconds == 0:
        raise ValueError(f"{name} must be positive")
    if finite and math.isinf(seconds):
        raise ValueError(f"{name} must be a finite number of seconds, not {value}")
    return seconds

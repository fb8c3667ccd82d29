"""Subscribe to POSIX signals from asyncio code, without losing any.

``subscribe(*signums, maxsize=1024)`` returns a :class:`Subscription`: an async context
manager and an async iterator of :class:`signal.Signals`. Every subscriber of a signal
receives every delivery, in order; closing a subscription drains the deliveries already
in flight into it, and the last subscriber of a signal gives the signal back to the
handler that was there before. See ``docs/signals.md``.
"""

from __future__ import annotations

from ._signals import Subscription as Subscription
from ._signals import subscribe as subscribe

__all__ = ["Subscription", "subscribe"]

# Users see the public home of these names in reprs, tracebacks and docs.
for _obj in (Subscription, subscribe):
    _obj.__module__ = __name__
del _obj

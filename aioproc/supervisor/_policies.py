"""When to restart a service, how long to wait first, and when to give up.

* :func:`should_restart` follows systemd's ``Restart=``: ``"no"``, ``"on-failure"``,
  ``"on-abnormal"``, ``"always"``, with ``success_exit_codes`` (systemd's
  ``SuccessExitStatus=``) and ``restart_exit_codes`` (``RestartForceExitStatus=``).
* :class:`Backoff` is the delay before a restart: capped exponential, with jitter.
* :class:`StartLimit` (systemd's ``StartLimitBurst=``/``StartLimitIntervalSec=``):
  more than ``burst`` starts within ``interval`` seconds makes the service FATAL.
"""

from __future__ import annotations

import dataclasses
import math
import random
import signal
from collections import deque
from collections.abc import Collection
from typing import Literal

from .. import ExitStatus
from .._durations import check_duration

__all__ = [
    "CLEAN_SIGNALS",
    "RESTART_POLICIES",
    "Backoff",
    "ExitReason",
    "RestartPolicy",
    "StartHistory",
    "StartLimit",
    "ended_cleanly",
    "is_clean",
    "should_restart",
]

RestartPolicy = Literal["no", "on-failure", "on-abnormal", "always"]
RESTART_POLICIES: tuple[RestartPolicy, ...] = ("no", "on-failure", "on-abnormal", "always")

#: Why a run of a service ended.
#: ``exited``: on its own; ``stopped``: we stopped it (never restarted);
#: ``spawn-failed``: the fork/exec step failed (no status);
#: ``ready-timeout`` / ``ready-failed``: the readiness check timed out or raised, and
#: the service was stopped; ``watchdog``: no ``WATCHDOG=1`` in time; ``liveness``: its
#: liveness probe failed, and it was stopped.
ExitReason = Literal[
    "exited", "stopped", "spawn-failed", "ready-timeout", "ready-failed", "watchdog", "liveness"
]

#: A signal death that systemd counts as a clean exit.
CLEAN_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE})

_TIMEOUTS = ("ready-timeout", "ready-failed", "watchdog", "liveness")

ExitCodes = Collection["int | signal.Signals"]


def _listed(status: ExitStatus, codes: ExitCodes) -> bool:
    """Whether ``status`` is in ``codes``: ints are exit codes, ``signal.Signals`` signals."""
    for code in codes:
        if isinstance(code, signal.Signals):
            if status.signal == code:
                return True
        elif status.exit_code is not None and status.exit_code == code:
            return True
    return False


def is_clean(status: ExitStatus | None, reason: ExitReason, success_exit_codes: ExitCodes) -> bool:
    """systemd's "clean" exit: code 0, SIGHUP/SIGINT/SIGTERM/SIGPIPE, or a listed code."""
    if status is None or reason in _TIMEOUTS or reason == "spawn-failed":
        return False
    if status.exit_code == 0 or status.signal in CLEAN_SIGNALS:
        return True
    return _listed(status, success_exit_codes)


def ended_cleanly(
    status: ExitStatus | None,
    reason: ExitReason,
    success_exit_codes: ExitCodes,
    stop_signal: int,
) -> bool:
    """Whether a run ended well: :func:`is_clean`, or death by the stop signal we sent.

    A run we stopped (``reason == "stopped"``) that died of its ``stop_signal`` ended
    as asked, whatever the signal. One we had to SIGKILL (it outlived
    ``stop_timeout``, or everything was killed at once) did not, unless SIGKILL is
    its stop signal or listed in ``success_exit_codes``.
    """
    if reason == "stopped":
        if status is None:
            return True
        if status.signal is not None and status.signal == stop_signal:
            return True
        return is_clean(status, "exited", success_exit_codes)
    return is_clean(status, reason, success_exit_codes)


def should_restart(
    policy: RestartPolicy,
    status: ExitStatus | None,
    reason: ExitReason,
    success_exit_codes: ExitCodes = (),
    restart_exit_codes: ExitCodes = (),
) -> bool:
    """Whether a run that ended this way is restarted (never after our own stop).

    ``on-failure``: anything but a clean exit (an unclean code, an unclean signal, a
    readiness, watchdog or liveness failure, a failed spawn). ``on-abnormal``: an unclean signal
    or a timeout, not an exit code. A status in ``restart_exit_codes`` is restarted
    whatever the policy.
    """
    if reason == "stopped":
        return False
    if status is not None and _listed(status, restart_exit_codes):
        return True
    if policy == "always":
        return True
    if policy == "no":
        return False
    if is_clean(status, reason, success_exit_codes):
        return False
    if policy == "on-failure":
        return True
    # on-abnormal: killed by a signal (not a clean or listed one), or a timeout.
    if reason in _TIMEOUTS:
        return True
    return status is not None and status.signal is not None


@dataclasses.dataclass(frozen=True)
class Backoff:
    """The delay before restart number ``attempt``: capped exponential, with jitter.

    ``min(max, initial * factor ** attempt)``, then shortened by a random fraction of
    at most ``jitter`` (so that services that fail together do not restart in step).
    Jitter only ever shortens the delay, so it never exceeds ``max``, and with
    ``factor * (1 - jitter) > 1`` successive delays always grow until the cap.
    The supervisor starts again from attempt 0 once a run has lasted
    ``stable_after`` seconds.
    """

    initial: float = 0.1
    factor: float = 2.0
    max: float = 30.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        for name in ("factor", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"Backoff.{name} must be a number, not {type(value).__name__}")
        check_duration(self.initial, "Backoff.initial")
        check_duration(self.max, "Backoff.max")
        if not 1 <= self.factor < math.inf:  # NaN fails too
            raise ValueError(f"Backoff.factor must be finite and at least 1, not {self.factor}")
        if self.max < self.initial:
            raise ValueError("Backoff.max must be at least Backoff.initial")
        if not 0 <= self.jitter < 1:
            raise ValueError("Backoff.jitter must be in [0, 1)")

    def delay(self, attempt: int, rand: float | None = None) -> float:
        """The delay before restart ``attempt`` (0 for the first); ``rand`` in [0, 1)."""
        try:
            base = min(self.max, self.initial * self.factor**attempt)
        except OverflowError:
            base = self.max
        r = random.random() if rand is None else rand
        return base * (1.0 - self.jitter * r)


@dataclasses.dataclass(frozen=True)
class StartLimit:
    """At most ``burst`` starts within any ``interval`` seconds; the next one is FATAL."""

    burst: int = 5
    interval: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError("StartLimit.burst must be a positive int")
        # Infinite: the window never slides (it is only compared, never waited for).
        check_duration(self.interval, "StartLimit.interval", finite=False)


class StartHistory:
    """The start times that :class:`StartLimit` counts (a sliding window)."""

    def __init__(self, limit: StartLimit) -> None:
        self.limit = limit
        self._starts: deque[float] = deque()

    def allow(self, now: float) -> bool:
        """Record a start at ``now`` and return True, or return False if over the limit."""
        while self._starts and now - self._starts[0] >= self.limit.interval:
            self._starts.popleft()
        if len(self._starts) >= self.limit.burst:
            return False
        self._starts.append(now)
        return True

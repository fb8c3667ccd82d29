"""Whether a running service is still healthy: liveness probes.

``Service(liveness=Liveness(ReadyHTTP("http://127.0.0.1:8000/health"), period=5))``
repeats one attempt of a check (:meth:`ReadyCheck.probe <aioproc.supervisor.ReadyCheck>`:
the TCP, HTTP, exec and coroutine-function checks have one) once the service is
ready, with Kubernetes' knobs:

* ``initial_delay``: seconds from readiness to the first attempt;
* ``period``: seconds from the start of one attempt to the start of the next;
* ``timeout``: seconds an attempt may take (an exec probe still running then is
  stopped, its whole process group, and the attempt counts as failed);
* ``failure_threshold``: that many failed attempts in a row fail the probe;
* ``success_threshold``: after a failure, that many passed attempts in a row are
  needed before the failures are forgotten.

A failed probe ends the run with the reason ``"liveness"`` (the service is stopped
as for any stop, and its restart policy decides, a liveness failure counting as
abnormal, like a watchdog timeout).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from .. import Process
from .._durations import check_duration
from ._readiness import ReadyCall, ReadyCheck, ReadyContext

__all__ = ["Liveness", "watch_liveness"]


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Liveness.{what} must be an int")
    if value < 1:
        raise ValueError(f"Liveness.{what} must be at least 1")
    return value


@dataclasses.dataclass(frozen=True)
class Liveness:
    """A liveness probe: ``check`` repeated while the service runs (see the module doc).

    ``check`` is a :class:`ReadyTCP`, :class:`ReadyHTTP`, :class:`ReadyExec` or
    :class:`ReadyCall`, or a coroutine function ``async def check(proc)`` that
    raises when the service is unhealthy. The check's own ``timeout`` and
    ``interval`` are for readiness; a probe uses the knobs here.
    """

    check: ReadyCheck | Callable[[Process], Awaitable[Any]]
    _: dataclasses.KW_ONLY
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1

    def __post_init__(self) -> None:
        check = self.check
        if not isinstance(check, ReadyCheck):
            if not (inspect.iscoroutinefunction(check) or callable(check)):
                raise TypeError(
                    "Liveness.check must be a ReadyTCP, ReadyHTTP, ReadyExec or ReadyCall, "
                    "or a coroutine function"
                )
            object.__setattr__(self, "check", ReadyCall(check))
        elif not check.probes:
            raise TypeError(
                f"{type(check).__name__} cannot be a liveness probe "
                "(use ReadyTCP, ReadyHTTP, ReadyExec or ReadyCall)"
            )
        for name in ("initial_delay", "period", "timeout"):
            value = check_duration(
                getattr(self, name), f"Liveness.{name}", positive=name != "initial_delay"
            )
            object.__setattr__(self, name, value)
        _count(self.failure_threshold, "failure_threshold")
        _count(self.success_threshold, "success_threshold")


async def watch_liveness(
    liveness: Liveness, ctx: ReadyContext, on_failure: Callable[[str], None] | None = None
) -> str:
    """Probe until the probe fails; return why (the last attempt's reason).

    ``on_failure(reason)`` is called for each failed attempt that does not (yet)
    fail the probe.
    """
    check = liveness.check
    assert isinstance(check, ReadyCheck)
    loop = asyncio.get_running_loop()
    await asyncio.sleep(liveness.initial_delay)
    failures = successes = 0
    while True:
        started = loop.time()
        reason = await check.probe(ctx, liveness.timeout)
        if reason is None:
            successes += 1
            if successes >= liveness.success_threshold:
                failures = 0
        else:
            successes = 0
            failures += 1
            if failures >= liveness.failure_threshold:
                if liveness.failure_threshold == 1:
                    return reason
                return f"{reason} ({failures} failures in a row)"
            if on_failure is not None:
                on_failure(reason)
        await asyncio.sleep(max(0.0, liveness.period - (loop.time() - started)))

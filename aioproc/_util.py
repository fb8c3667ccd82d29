"""Small helpers shared by the modules; nothing here is public."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Coroutine
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


class _Ours(Protocol):
    @property
    def _loop_ref(self) -> weakref.ReferenceType[asyncio.AbstractEventLoop]: ...


L = TypeVar("L", bound=_Ours)


async def shielded(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion even if the caller is cancelled meanwhile.

    Cleanup (stopping and reaping a child) must not be abandoned half-way
    because the task doing it was cancelled. The work runs in its own task;
    cancellations of the caller are absorbed until it finishes, then the
    cancellation is raised again so that the caller still sees it (and
    ``asyncio.timeout``/task groups keep their cancel counts right: each
    request stays counted by ``Task.cancelling()``, and one CancelledError
    comes out, as from any await that was cancelled).

    That includes a cancellation requested in the very loop turn in which the
    work finishes: the caller then wakes up with the CancelledError although
    the work is done. Returning the result there would swallow the request
    (``asyncio.shield`` does not): a task group that cancelled this task to
    abort would wait for it for ever while it goes on to its next await.
    An error of the work itself takes precedence over the cancellation.
    """
    task = asyncio.ensure_future(coro)
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            if not task.done():
                cancelled = exc
                continue
            if not task.cancelled():
                task.result()  # the work's own error, if it failed
            raise
        break
    if cancelled is not None:
        raise cancelled
    return result


# How far in the future a timer that only keeps an object alive fires: never.
_FOREVER = 10 * 365 * 24 * 3600.0


def _keep(_: object) -> None:  # pragma: no cover - the timer never fires
    pass


def owned_by_loop(loop: asyncio.AbstractEventLoop, obj: object) -> None:
    """Make ``loop`` keep ``obj`` alive until the loop is closed or collected.

    Through a timer that never fires: ``close()`` drops a loop's timers (the
    default loop and uvloop both), so ``obj`` is freed then, and its
    ``__del__`` can clean up after the loop, also when it was closed without
    a shutdown. Registries that find ``obj`` by its loop should then hold it
    weakly. Call on the loop's thread.
    """
    loop.call_later(_FOREVER, _keep, obj)


class PerLoop(Generic[L]):
    """One object per event loop (a loop owns it), found by its loop, held weakly.

    A plain dict keyed by ``id(loop)``, for lookups from any thread on hot
    paths, each entry checked against the object's own weak reference to its
    loop (``_loop_ref``): an id may be reused once its loop is gone. Entries
    leave when their object is freed.
    """

    __slots__ = ("_refs",)

    def __init__(self) -> None:
        self._refs: dict[int, weakref.ReferenceType[L]] = {}

    def get(self, loop: asyncio.AbstractEventLoop) -> L | None:
        ref = self._refs.get(id(loop))
        obj = None if ref is None else ref()
        if obj is not None and obj._loop_ref() is loop:
            return obj
        return None

    def add(self, loop: asyncio.AbstractEventLoop, obj: L) -> None:
        key = id(loop)
        refs = self._refs

        def forget(ref: weakref.ReferenceType[L]) -> None:
            if refs.get(key) is ref:
                del refs[key]

        refs[key] = weakref.ref(obj, forget)

    def discard(self, loop: asyncio.AbstractEventLoop) -> None:
        self._refs.pop(id(loop), None)

    def objects(self) -> list[L]:
        return [obj for obj in (ref() for ref in list(self._refs.values())) if obj is not None]

    def clear(self) -> None:
        self._refs.clear()


def fixup_module_metadata(module_name: str, namespace: dict[str, Any]) -> None:
    """Make a package's public objects say they live there.

    Users then see ``aioproc.Process``, not ``aioproc._process.Process``, in
    reprs, tracebacks and the API docs. Called by each public ``__init__``.
    """
    private = module_name + "._"
    for name in namespace["__all__"]:
        obj = namespace[name]
        if getattr(obj, "__module__", "").startswith(private):
            with contextlib.suppress(AttributeError, TypeError):
                obj.__module__ = module_name

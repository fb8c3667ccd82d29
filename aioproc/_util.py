"""Small helpers shared by the modules; nothing here is public."""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import Coroutine
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


class _Ours(Protocol):
    @property
    def _loop_ref(self) -> weakref.ReferenceType[asyncio.AbstractEventLoop]: ...


L = TypeVar("L", bound=_Ours)


def is_number(text: str) -> bool:
    """Whether ``text`` is a plain non-negative decimal number: ASCII digits only.

    Not ``str.isdigit()``: that is true of "²" and "①" too, which ``int()``
    refuses (a ValueError where a clean message was meant), and of other
    scripts' digits, which ``int()`` takes but no port or count is written in.
    """
    return text.isascii() and text.isdigit()


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


def _keep(*_: object) -> None:  # pragma: no cover - the descriptor never turns readable
    pass


class _Anchor:
    """What one loop keeps alive for aioproc (:func:`owned_by_loop`).

    Held by the loop as the argument of a reader callback on an eventfd that
    nothing ever writes to: the descriptor never turns readable, the callback
    never runs, and the registration is dropped when the loop is closed (the
    default loop clears its selector, uvloop closes its poll handles) or
    collected. The anchor, and what it holds, is freed then; its ``__del__``
    closes the eventfd.

    Not a timer that never fires (as before): asyncio's timer heap orders
    handles by ``when`` with ``<``, and a NaN ``when`` (from anyone's
    ``call_later(nan)``) compares false both ways. A NaN timer alone fires at
    once and leaves, but beside a timer due in ten years the heap's order
    breaks, that timer can end up first, and the loop then sleeps up to a day
    while every shorter timer waits (``wait_for(..., 1)`` never fired). A
    reader is outside the heap, so nothing in the heap can disturb it, nor
    it the heap.
    """

    __slots__ = ("__weakref__", "_fd", "_loop_ref", "objects")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._fd = -1  # __del__ runs even if eventfd() fails (EMFILE)
        self._loop_ref = weakref.ref(loop)
        self.objects: list[object] = []
        self._fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            loop.add_reader(self._fd, _keep, self)
        except BaseException:
            self._close()
            raise

    def _close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        # The loop dropped its registration (closed or collected): nothing
        # refers to the descriptor any more.
        self._close()


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


# Each loop's anchor, held weakly: the loop owns it.
_anchors: PerLoop[_Anchor] = PerLoop()


def anchor_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Make sure :func:`owned_by_loop` cannot fail for ``loop`` from now on.

    Raises :class:`OSError` when no descriptor is free (the first time for a
    loop only): call it before making anything that must not be left unowned.
    """
    if _anchors.get(loop) is None:
        _anchors.add(loop, _Anchor(loop))


def owned_by_loop(loop: asyncio.AbstractEventLoop, obj: object) -> None:
    """Make ``loop`` keep ``obj`` alive until the loop is closed or collected.

    ``close()`` drops what the loop holds (see :class:`_Anchor`), so ``obj``
    is freed then, and its ``__del__`` can clean up after the loop, also when
    it was closed without a shutdown. Registries that find ``obj`` by its
    loop should then hold it weakly. Call on the loop's thread, after
    :func:`anchor_loop` where a failure (:class:`OSError`, no descriptor free)
    would leave ``obj`` unowned.
    """
    anchor = _anchors.get(loop)
    if anchor is None:
        anchor = _Anchor(loop)
        _anchors.add(loop, anchor)
    anchor.objects.append(obj)


def fixup_module_metadata(
    module_name: str, namespace: dict[str, Any], private: str | None = None
) -> None:
    """Make a package's public objects say they live there.

    Users then see ``aioproc.Process``, not ``aioproc._process.Process``, in
    reprs, tracebacks and the API docs. Called by each public ``__init__``, and by
    the public modules over a private package (``private="aioproc._http"``).
    """
    if private is None:
        private = module_name + "._"
    for name in namespace["__all__"]:
        obj = namespace[name]
        if getattr(obj, "__module__", "").startswith(private):
            with contextlib.suppress(AttributeError, TypeError):
                obj.__module__ = module_name

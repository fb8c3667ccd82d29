"""Small helpers shared by the modules; nothing here is public."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def shielded(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion even if the caller is cancelled meanwhile.

    Cleanup (stopping and reaping a child) must not be abandoned half-way
    because the task doing it was cancelled. The work runs in its own task;
    cancellations of the caller are absorbed until it finishes, then the
    cancellation is raised again so that the caller still sees it (and
    ``asyncio.timeout``/task groups keep their cancel counts right).
    """
    task = asyncio.ensure_future(coro)
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            if task.done() and task.cancelled():
                raise
            if task.done():
                result = task.result()
                break
            cancelled = exc
            continue
        break
    if cancelled is not None:
        raise cancelled
    return result


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

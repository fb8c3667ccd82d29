"""Small helpers shared by the modules; nothing here is public."""

from __future__ import annotations

import asyncio
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

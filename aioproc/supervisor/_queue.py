"""The bounded, dropping queue behind :class:`EventStream` and :class:`LogStream`.

One reader, one loop. The supervisor puts items synchronously (from callbacks, never
awaiting), so a reader that falls behind must never hold it back: past ``maxsize``
the oldest item is dropped and ``dropped`` counts it. Closing wakes the reader,
which still gets what was queued, then :class:`anyio.EndOfStream`.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover
    from typing_extensions import Self

__all__ = ["DroppingQueue"]

T = TypeVar("T")


class DroppingQueue(Generic[T]):
    """An async iterator and async context manager over items put by the supervisor."""

    # ``on_close`` is called with the queue itself (a subclass: the caller's own type).
    def __init__(self, maxsize: int, on_close: Callable[[Any], object]) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._queue: deque[T] = deque()
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._on_close = on_close
        #: How many items were dropped because the reader fell behind.
        self.dropped = 0

    def _put(self, item: T) -> None:
        if self._closed:
            return
        if len(self._queue) >= self._maxsize:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(item)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _close(self) -> None:
        self._closed = True
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    async def get(self) -> T:
        """The next item; :class:`anyio.EndOfStream` once closed and drained."""
        while not self._queue:
            if self._closed:
                raise anyio.EndOfStream
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.popleft()

    def get_nowait(self) -> T | None:
        """The next queued item, or None."""
        return self._queue.popleft() if self._queue else None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.get()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Stop receiving (what is already queued can still be read)."""
        if not self._closed:
            self._close()
            self._on_close(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

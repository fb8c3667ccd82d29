"""Shared bits of the supervisor tests: programs, free ports, event recording."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from aioproc.supervisor import Event, Supervisor

PROGRAMS = Path(__file__).parent / "programs"


def program(name: str, *args: object) -> list[str]:
    """argv running ``tests/supervisor/programs/NAME.py ARGS`` with this Python."""
    return [sys.executable, str(PROGRAMS / f"{name}.py"), *map(str, args)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Recorder:
    """Records a supervisor's events; ``await rec.until(pred)`` waits for a matching one."""

    def __init__(self, sup: Supervisor) -> None:
        self.events: list[Event] = []
        self._stream = sup.events()
        self._waiters: list[tuple[Callable[[Event], bool], asyncio.Future[Event]]] = []
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        async for event in self._stream:
            self.events.append(event)
            for pred, fut in list(self._waiters):
                if not fut.done() and pred(event):
                    fut.set_result(event)

    async def until(self, pred: Callable[[Event], bool], timeout: float = 10.0) -> Event:
        for event in self.events:
            if pred(event):
                return event
        fut: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, fut))
        return await asyncio.wait_for(fut, timeout)

    def of(self, kind: type, service: str | None = None) -> list[Event]:
        return [
            e
            for e in self.events
            if isinstance(e, kind) and (service is None or e.service == service)
        ]

    async def close(self) -> None:
        await self._stream.aclose()
        await self._task

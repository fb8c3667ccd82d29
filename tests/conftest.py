from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import uvloop


def pytest_asyncio_loop_factories() -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    # Every async test runs once on the default asyncio loop and once on uvloop.
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}

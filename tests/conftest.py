from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator, Mapping

import pytest
import uvloop

import aioproc

from .helpers import children_of, open_fds, process_state


def pytest_asyncio_loop_factories() -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    # Every async test runs once on the default asyncio loop and once on uvloop.
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=["pidfd", "pid"])
def wait_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test in both waiting modes (the core suite runs in both)."""
    aioproc.set_wait_mode(request.param)
    try:
        yield request.param
    finally:
        aioproc.set_wait_mode("auto")


@pytest.fixture(scope="session", autouse=True)
def _warm_up() -> None:
    # uvloop and asyncio keep a few process-wide descriptors after their first
    # loop (signal wake-up pipes, epoll); make them exist before any test
    # counts descriptors.
    for factory in (asyncio.new_event_loop, uvloop.new_event_loop):
        loop = factory()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fail the test if it leaves a child, a zombie, a descriptor or a thread behind."""
    fds = open_fds()
    children = children_of()
    threads = _threads()
    yield
    left = children_of() - children
    assert not left, f"children left behind: {sorted(left)} ({[process_state(p) for p in left]})"
    new_fds = open_fds() - fds
    details = {}
    for fd in new_fds:
        try:
            details[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    assert not details, f"descriptors left open: {details}"
    assert _threads() <= threads, "threads left running"


def _threads() -> int:
    # Spawn workers are bounded, and retire on their own after 10 s without work.
    return sum(1 for t in threading.enumerate() if not t.name.startswith("aioproc-spawn"))


@pytest.fixture
def pidfd_mode() -> Iterator[None]:
    """Run a test in pidfd mode only (it looks at the pidfd machinery itself)."""
    aioproc.set_wait_mode("pidfd")
    try:
        yield
    finally:
        aioproc.set_wait_mode("auto")

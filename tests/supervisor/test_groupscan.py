"""Shutdown that scales: shared /proc scans (``_groupscan.py``), concurrent stops."""

from __future__ import annotations

import asyncio
import os
import resource
import time

import pytest

from aioproc.supervisor import Service, ServiceState, Supervisor
from aioproc.supervisor._groupscan import GroupScanner

from ..helpers import no_descendants_left  # noqa: F401 - a fixture
from .util import Recorder

pytestmark = pytest.mark.usefixtures("no_leaks", "no_descendants_left")


async def _all_running(sup: Supervisor, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    rec = Recorder(sup)
    try:
        while not all(s.state is ServiceState.RUNNING for s in sup.status().values()):
            assert time.monotonic() < deadline, "the services did not all start"
            await rec.until(lambda e: True, timeout)
            rec.events.clear()
    finally:
        await rec.close()


async def test_one_scan_serves_every_waiter() -> None:
    scanner = GroupScanner()
    me = os.getpgid(0)
    results = await asyncio.gather(*(scanner.members(me) for _ in range(200)))
    assert scanner.scans == 1
    assert all(os.getpid() in r for r in results)
    # A request made after a scan gets a new scan (it must see processes forked since).
    assert os.getpid() in await scanner.members(me)
    assert scanner.scans == 2


async def test_shutdown_of_many_services_is_linear() -> None:
    """400 services that exit at once on SIGTERM stop within a few seconds.

    Before the shared scan each service scanned all of /proc for its group, once
    per stop: 250 services took 12 s on the shared test machine, 400 far longer.
    """
    n = 400
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 8 * n:
        pytest.skip(f"needs {8 * n} descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 8 * n), hard))
    try:
        services = [Service(f"s{i}", ["sleep", "600"], output="inherit") for i in range(n)]
        sup = Supervisor(services, shutdown_timeout=60)
        async with sup:
            await _all_running(sup)
            started = time.monotonic()
        took = time.monotonic() - started
        assert {s.state for s in sup.status().values()} == {ServiceState.STOPPED}
        # What makes it linear: the /proc scans are shared, not one per service
        # (the time itself is benchmarks/shutdown.py's to measure, not a test's).
        assert sup._scanner.scans < n / 4, (sup._scanner.scans, f"{took:.2f} s")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_independent_services_stop_concurrently() -> None:
    # Each takes 1 s to exit after SIGTERM: one after another, 10 would take 10 s.
    script = "trap 'sleep 1; exit 0' TERM; while :; do sleep 0.05; done"
    services = [Service(f"s{i}", ["sh", "-c", script], output="inherit") for i in range(10)]
    sup = Supervisor(services, shutdown_timeout=30)
    async with sup:
        await _all_running(sup)
        started = time.monotonic()
    took = time.monotonic() - started
    # One after another they would take 10 s; together, 1 s (and load's margin).
    assert 1.0 <= took < 6.0, took

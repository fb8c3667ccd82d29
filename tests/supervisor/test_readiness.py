"""Readiness checks against real services: TCP, HTTP, a line, sd_notify, a coroutine."""

from __future__ import annotations

import asyncio

import pytest

import aioproc
from aioproc.supervisor import (
    Exited,
    Ready,
    ReadyHTTP,
    ReadyLine,
    ReadyNotify,
    ReadyTCP,
    Service,
    ServiceState,
    Supervisor,
)
from aioproc.supervisor._readiness import ReadyContext

from .util import Recorder, free_port, program

pytestmark = pytest.mark.usefixtures("no_leaks")


def drop(name: str, line: str) -> None:
    pass


async def test_ready_notify_with_status_message() -> None:
    svc = Service("n", program("notify"), ready=ReadyNotify(timeout=10), output=drop)
    async with Supervisor([svc]) as sup:
        status = await asyncio.wait_for(sup.start("n"), 10)
        assert status.state is ServiceState.RUNNING
        assert status.message == "serving"  # the last STATUS= it sent


async def test_ready_notify_watchdog_kept_alive_and_expired() -> None:
    alive = Service("alive", program("notify", 0.05), ready=ReadyNotify(watchdog=0.5), output=drop)
    silent = Service(
        "silent", program("notify"), ready=ReadyNotify(watchdog=0.2), restart="no", output=drop
    )
    async with Supervisor([alive, silent]) as sup:
        rec = Recorder(sup)
        exited = await rec.until(lambda e: isinstance(e, Exited) and e.service == "silent")
        assert exited.reason == "watchdog"  # type: ignore[attr-defined]
        assert sup.status()["alive"].state is ServiceState.RUNNING
    await rec.close()


async def test_ready_line_matches_output() -> None:
    lines: list[str] = []
    script = "echo booting; sleep 0.1; echo 'listening on 42'; exec sleep 30"
    svc = Service(
        "l",
        ["sh", "-c", script],
        ready=ReadyLine(r"listening on \d+"),
        output=lambda name, line: lines.append(line),
    )
    async with Supervisor([svc]) as sup:
        status = await asyncio.wait_for(sup.start("l"), 10)
        assert status.state is ServiceState.RUNNING
        assert lines == ["booting", "listening on 42"]


async def test_ready_line_sees_lines_printed_before_it_started_watching() -> None:
    # The race the replay closes: the pump may pass the line on before the check
    # task has run at all.
    async with aioproc.spawn(["true"]) as proc:
        ctx = ReadyContext(proc, None)
        ctx.feed_line("ready now")
        await asyncio.wait_for(ReadyLine("ready").wait(ctx), 1)


async def test_ready_http_waits_for_a_2xx() -> None:
    port = free_port()
    lines: list[str] = []
    svc = Service(
        "h",
        program("http_server", port, 2),  # /health answers 503 twice, then 200
        ready=ReadyHTTP(f"http://127.0.0.1:{port}/health", interval=0.02),
        output=lambda name, line: lines.append(line),
    )
    async with Supervisor([svc]) as sup:
        status = await asyncio.wait_for(sup.start("h"), 10)
        assert status.state is ServiceState.RUNNING
    assert lines[-1] == "GET /health -> 200"
    assert lines.count("GET /health -> 503") == 2


async def test_ready_coroutine_function() -> None:
    seen: list[int] = []

    async def check(proc: aioproc.Process) -> None:
        seen.append(proc.pid)

    async with Supervisor([Service("c", ["sleep", "30"], ready=check, output=drop)]) as sup:
        status = await sup.start("c")
        assert status.state is ServiceState.RUNNING
        assert seen == [status.pid]


async def test_ready_timeout_stops_the_run() -> None:
    port = free_port()
    svc = Service(
        "t",
        ["sleep", "30"],
        ready=ReadyTCP("127.0.0.1", port, timeout=0.2),
        restart="no",
        output=drop,
    )
    async with Supervisor([svc]) as sup:
        rec = Recorder(sup)
        await asyncio.wait_for(sup.wait(), 10)
        assert not rec.of(Ready)
        exited = rec.of(Exited)[0]
        assert exited.reason == "ready-timeout"  # type: ignore[attr-defined]
        assert exited.status.signal is not None  # type: ignore[attr-defined]
    await rec.close()


async def test_failing_check_is_a_failure() -> None:
    async def check(proc: aioproc.Process) -> None:
        raise RuntimeError("nope")

    svc = Service("f", ["sleep", "30"], ready=check, restart="no", output=drop)
    async with Supervisor([svc]) as sup:
        rec = Recorder(sup)
        await asyncio.wait_for(sup.wait(), 10)
        exited = rec.of(Exited)[0]
        assert exited.reason == "ready-failed"
        assert "nope" in (exited.error or "")
    await rec.close()


def test_checks_validate_their_arguments() -> None:
    with pytest.raises(ValueError, match="port"):
        ReadyTCP("127.0.0.1", 0)
    with pytest.raises(ValueError, match="URL"):
        ReadyHTTP("ftp://x")
    with pytest.raises(ValueError, match="positive"):
        ReadyLine("x", timeout=0)
    with pytest.raises(ValueError, match="inherit"):
        Service("x", ["true"], ready=ReadyLine("x"), output="inherit")


@pytest.mark.parametrize("odd", [float("nan"), float("inf")])
def test_checks_refuse_nan_and_infinite_times(odd: float) -> None:
    cases = [
        (lambda: ReadyTCP("127.0.0.1", 1, timeout=odd), "ReadyTCP.timeout"),
        (lambda: ReadyTCP("127.0.0.1", 1, interval=odd), "ReadyTCP.interval"),
        (lambda: ReadyHTTP("http://x/", timeout=odd), "ReadyHTTP.timeout"),
        (lambda: ReadyHTTP("http://x/", interval=odd), "ReadyHTTP.interval"),
        (lambda: ReadyLine("x", timeout=odd), "ReadyLine.timeout"),
        (lambda: ReadyNotify(timeout=odd), "ReadyNotify.timeout"),
        (lambda: ReadyNotify(watchdog=odd), "ReadyNotify.watchdog"),
    ]
    for make, name in cases:
        with pytest.raises(ValueError, match=f"^{name} must be a"):
            make()

"""The supervisor's per-service log history: bounded, merged in order, followed live."""

from __future__ import annotations

import asyncio
import signal

import anyio
import pytest

from aioproc.supervisor import Exited, LogLine, ReadyLine, Service, Supervisor

pytestmark = pytest.mark.usefixtures("no_leaks")


def _lines_then_wait(n: int, tag: str) -> list[str]:
    # n lines, then a marker the readiness check waits for, then silence.
    return ["sh", "-c", f"i=0; while [ $i -lt {n} ]; do echo {tag}$i; i=$((i+1)); done; "
            f"echo {tag}-done; exec sleep 30"]  # fmt: skip


def _svc(name: str, n: int, **kw: object) -> Service:
    kw.setdefault("output", lambda name, line: None)
    return Service(name, _lines_then_wait(n, name), ready=ReadyLine(f"^{name}-done$"), **kw)  # type: ignore[arg-type]


async def test_history_is_bounded_per_service_and_merged_in_order() -> None:
    async with Supervisor([_svc("a", 30), _svc("b", 3)], log_lines=10) as sup:
        await asyncio.wait_for(asyncio.gather(sup.start("a"), sup.start("b")), 10)
        a = sup.logs(["a"])
        assert [line.text for line in a] == [f"a{i}" for i in range(21, 30)] + ["a-done"]
        assert all(isinstance(line, LogLine) and line.service == "a" for line in a)
        both = sup.logs()
        assert len(both) == 14  # 10 of a, all 4 of b
        assert [line.seq for line in both] == sorted(line.seq for line in both)
        assert [line.text for line in sup.logs(["b"], 2)] == ["b2", "b-done"]
        assert sup.logs(["b"], 0) == []
        with pytest.raises(KeyError):
            sup.logs(["nope"])


async def test_no_history_with_zero_lines_and_bad_sizes_refused() -> None:
    with pytest.raises(ValueError, match="log_lines"):
        Supervisor([], log_lines=-1)
    with pytest.raises(TypeError):
        Supervisor([], log_lines=1.5)  # type: ignore[arg-type]
    async with Supervisor([_svc("a", 3)], log_lines=0) as sup:
        await asyncio.wait_for(sup.start("a"), 10)
        assert sup.logs() == []


async def test_follow_sees_every_new_line_once_and_ends_at_shutdown() -> None:
    svc = Service(
        "talker",
        ["sh", "-c", "trap 'echo second; echo third' USR1; echo first; "
         "while :; do sleep 5 & wait $!; done"],
        ready=ReadyLine("^first$"),
        output=lambda name, line: None,
    )  # fmt: skip
    sup = Supervisor([svc])
    async with sup:
        await asyncio.wait_for(sup.start("talker"), 10)
        # logs() then follow_logs() with no await between: nothing missed, nothing twice.
        before = [line.text for line in sup.logs(["talker"])]
        stream = sup.follow_logs(["talker"])
        assert before == ["first"]
        sup.send_signal("talker", signal.SIGUSR1)
        got = [(await asyncio.wait_for(stream.get(), 10)).text for _ in range(2)]
        assert got == ["second", "third"]
    # The supervisor has shut down: the stream ends.
    with pytest.raises(anyio.EndOfStream):
        await asyncio.wait_for(stream.get(), 10)
    assert stream.closed
    assert [line async for line in sup.follow_logs()] == []


async def test_a_slow_follower_drops_the_oldest_lines() -> None:
    async with Supervisor([_svc("a", 50)]) as sup:
        stream = sup.follow_logs(maxsize=5)
        await asyncio.wait_for(sup.start("a"), 10)
        assert stream.dropped == 46
        rest = [stream.get_nowait() for _ in range(5)]
        assert [line.text for line in rest if line] == ["a46", "a47", "a48", "a49", "a-done"]
        assert stream.get_nowait() is None
        await stream.aclose()


async def test_send_signal_reaches_the_running_process_only() -> None:
    async with Supervisor([_svc("a", 1)]) as sup:
        with pytest.raises(ProcessLookupError):
            sup.send_signal("a", signal.SIGTERM)  # not started yet
        await asyncio.wait_for(sup.start("a"), 10)
        with pytest.raises(KeyError):
            sup.send_signal("nope", signal.SIGTERM)
        async with sup.events() as events:
            sup.send_signal("a", signal.SIGKILL)
            event = await asyncio.wait_for(events.get(), 10)
        assert isinstance(event, Exited)
        assert event.status is not None
        assert event.status.signal == signal.SIGKILL

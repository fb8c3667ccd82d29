"""Readiness checks against real services: TCP, HTTP, a line, sd_notify, a coroutine."""

from __future__ import annotations

import asyncio
import shutil
import stat
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import aioproc
from aioproc.supervisor import (
    Event,
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

from ..helpers import DROP_ROOT, no_descendants_left  # noqa: F401 - a fixture
from .util import PROGRAMS, Recorder, free_port, program

pytestmark = pytest.mark.usefixtures("no_leaks", "no_descendants_left")


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


def _script(*steps: str) -> list[str]:
    """A notify service running ``steps`` (see programs/notify_script.py); -S: starts fast."""
    return [sys.executable, "-S", str(PROGRAMS / "notify_script.py"), *steps]


async def test_watchdog_trigger_fails_the_run_at_once() -> None:
    # With no watchdog configured too (as systemd), and before READY=1 as well.
    after = Service(
        "after", _script("READY=1", "sleep:0.2", "WATCHDOG=trigger"),
        ready=ReadyNotify(timeout=30), restart="no", output=drop,
    )  # fmt: skip
    before = Service(
        "before", _script("WATCHDOG=trigger"), ready=ReadyNotify(timeout=30), restart="no",
        output=drop,
    )  # fmt: skip
    async with Supervisor([after, before]) as sup:
        rec = Recorder(sup)
        for name in ("after", "before"):

            def of_this(e: Event, name: str = name) -> bool:
                return isinstance(e, Exited) and e.service == name

            exited = await rec.until(of_this)
            assert isinstance(exited, Exited)
            assert exited.reason == "watchdog", name
            assert exited.error == "the service sent WATCHDOG=trigger"
        assert [e.service for e in rec.of(Ready)] == ["after"]
    await rec.close()


async def test_extend_timeout_usec_moves_the_readiness_deadline() -> None:
    # Ready 2 s after start, with a timeout of 1 s: only the extension lets it be.
    svc = Service(
        "slow", _script("EXTEND_TIMEOUT_USEC=20000000", "sleep:2", "READY=1"),
        ready=ReadyNotify(timeout=1), restart="no", output=drop,
    )  # fmt: skip
    bad = Service(  # the same without an extension, and with nonsense in its place
        "bad", _script("EXTEND_TIMEOUT_USEC=-5;EXTEND_TIMEOUT_USEC=\u00b2", "sleep:2", "READY=1"),
        ready=ReadyNotify(timeout=1), restart="no", output=drop,
    )  # fmt: skip
    async with Supervisor([svc, bad]) as sup:
        rec = Recorder(sup)
        ready = await rec.until(lambda e: isinstance(e, Ready) and e.service == "slow")
        started = rec.of(aioproc.supervisor.Starting, "slow")[0]
        assert ready.time - started.time > 1.5
        exited = await rec.until(lambda e: isinstance(e, Exited) and e.service == "bad")
        assert isinstance(exited, Exited)
        assert exited.reason == "ready-timeout"
    await rec.close()


async def test_watchdog_usec_from_the_service_changes_the_interval() -> None:
    # 0.3 s configured; the service asks for 30 s, stays silent 1.2 s, then asks for
    # 0.1 s and stays silent: the watchdog fires then, not at 0.3 s.
    svc = Service(
        "w", _script("READY=1;WATCHDOG_USEC=30000000", "sleep:1.2", "WATCHDOG_USEC=100000"),
        ready=ReadyNotify(watchdog=0.3), restart="no", output=drop,
    )  # fmt: skip
    async with Supervisor([svc]) as sup:
        rec = Recorder(sup)
        exited = await rec.until(lambda e: isinstance(e, Exited))
        assert isinstance(exited, Exited)
        assert exited.reason == "watchdog"
        ready = rec.of(Ready)[0]
        assert exited.time - ready.time > 1.0
    await rec.close()


NOISE = """
import os, random, socket
rng = random.Random(20261206)
addr = os.environ["NOTIFY_SOCKET"]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
keys = [b"READY", b"STATUS", b"WATCHDOG", b"WATCHDOG_USEC", b"EXTEND_TIMEOUT_USEC", b"MAINPID",
        b"", b"=", b"\\xff", b"READY=0", b"x" * 5000]
values = [b"", b"1", b"0", b"-1", b"\\xc2\\xb2", b"1e9", b"99999999999999999999999", b"nan",
          b"\\x00", b"\\xff\\xfe", b"trigger!", b"\\n", b"=" * 3, bytes(range(256))]
for _ in range(300):
    lines = [rng.choice(keys) + b"=" + rng.choice(values) for _ in range(rng.randint(0, 4))]
    lines = [line for line in lines if line != b"READY=1"]  # ready only at the end
    if rng.random() < 0.2:
        lines.append(bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))))
    sock.sendto(b"\\n".join(lines), addr)
sock.sendto(b"STATUS=survived\\nREADY=1", addr)
print("sent", flush=True)
import time; time.sleep(3600)
"""


async def test_notify_messages_of_every_shape_break_nothing() -> None:
    """300 datagrams of random keys, values and bytes from the service itself, then
    READY=1: the supervisor reads them all and the service becomes ready."""
    errors: list[object] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        svc = Service(
            "n", [sys.executable, "-c", NOISE], ready=ReadyNotify(timeout=30), output=drop
        )
        async with Supervisor([svc]) as sup:
            status = await asyncio.wait_for(sup.start("n"), 30)
            assert status.state is ServiceState.RUNNING
            assert status.message == "survived"
    finally:
        loop.set_exception_handler(None)
    assert errors == []


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


# ---------------------------------------------------------------- who may notify

_SEND = """
import os, socket, sys, time
{drop}
addr = sys.argv[1]
if addr.startswith("@"):
    addr = "\\0" + addr[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[3])):
    try:
        s.sendto(sys.argv[2].encode(), addr)
        print("sent", flush=True)
    except OSError as exc:
        print(type(exc).__name__, flush=True)
    time.sleep(0.05)
"""


def _telling(argv: list[str], ready: ReadyNotify) -> tuple[Service, asyncio.Future[str]]:
    """A service "n" that prints its NOTIFY_SOCKET, then execs ``argv``; and that address."""
    address: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_line(name: str, line: str) -> None:
        if line.startswith("address ") and not address.done():
            address.set_result(line.split(" ", 1)[1])

    script = 'echo "address $NOTIFY_SOCKET"; exec "$@"'
    svc = Service("n", ["sh", "-c", script, "sh", *argv], ready=ready, restart="no", output=on_line)
    return svc, address


async def _send_from(address: str, message: str, count: int, other_uid: bool) -> str:
    """Send ``message`` ``count`` times from a fresh process (as another uid if asked)."""
    code = _SEND.format(drop=textwrap.dedent(DROP_ROOT) if other_uid else "")
    result = await aioproc.run(
        [sys.executable, "-c", code, address, message, str(count)], stdout=aioproc.PIPE
    )
    assert result.returncode == 0
    assert isinstance(result.stdout, bytes)
    return result.stdout.decode()


@pytest.mark.parametrize("other_uid", [True, False], ids=["other-uid", "same-uid-outsider"])
async def test_notify_from_outsiders_is_ignored(other_uid: bool) -> None:
    """READY=1 and STATUS= from a process that is not the service's change nothing."""
    svc, told = _telling(["sleep", "30"], ReadyNotify(timeout=3))
    async with Supervisor([svc]) as sup:
        rec = Recorder(sup)
        address = await asyncio.wait_for(told, 10)
        out = await _send_from(address, "READY=1\nSTATUS=pwned", 10, other_uid)
        # Another user cannot even reach the socket; a same-uid outsider can, and is dropped.
        assert out.split() == (["PermissionError"] * 10 if other_uid else ["sent"] * 10)
        exited = await rec.until(lambda e: isinstance(e, Exited))
        assert exited.reason == "ready-timeout"  # type: ignore[attr-defined]
        assert not rec.of(Ready)
        assert sup.status()["n"].message != "pwned"
    await rec.close()


@pytest.mark.parametrize("other_uid", [True, False], ids=["other-uid", "same-uid-outsider"])
async def test_watchdog_keepalives_from_outsiders_are_ignored(other_uid: bool) -> None:
    """A hung service's watchdog fires even while an outsider sends WATCHDOG=1."""
    svc, told = _telling(program("notify"), ReadyNotify(watchdog=0.5))
    async with Supervisor([svc]) as sup:
        rec = Recorder(sup)
        address = await asyncio.wait_for(told, 10)
        await rec.until(lambda e: isinstance(e, Ready))
        sender = asyncio.ensure_future(_send_from(address, "WATCHDOG=1", 40, other_uid))
        exited = await rec.until(lambda e: isinstance(e, Exited))
        assert exited.reason == "watchdog"  # type: ignore[attr-defined]
        assert not sender.done(), "the keep-alives stopped before the watchdog fired"
        await sender
    await rec.close()


@pytest.mark.parametrize(("access", "ready"), [("all", True), ("main", False)], ids=["all", "main"])
async def test_notify_access_from_a_child_of_the_service(access: str, ready: bool) -> None:
    # The shell's child (not the main process, in its group) notifies.
    script = f"{sys.executable} {PROGRAMS / 'notify.py'}; exit 0"
    svc = Service(
        "n",
        ["sh", "-c", script],
        ready=ReadyNotify(timeout=3, access=access),  # type: ignore[arg-type]
        restart="no",
        output=drop,
    )
    async with Supervisor([svc]) as sup:
        rec = Recorder(sup)
        event = await rec.until(lambda e: isinstance(e, (Ready, Exited)))
        assert isinstance(event, Ready) is ready
    await rec.close()


@pytest.mark.skipif(shutil.which("systemd-notify") is None, reason="no systemd-notify here")
async def test_systemd_notify_works() -> None:
    svc = Service(
        "n",
        ["sh", "-c", "systemd-notify --ready --status=from-systemd-notify; exec sleep 30"],
        ready=ReadyNotify(timeout=10),
        output=drop,
    )
    async with Supervisor([svc]) as sup:
        status = await asyncio.wait_for(sup.start("n"), 10)
        assert status.state is ServiceState.RUNNING
        assert status.message == "from-systemd-notify"


async def test_notify_socket_is_private() -> None:
    svc, told = _telling(["sleep", "30"], ReadyNotify(timeout=10))
    async with Supervisor([svc]) as sup:
        address = await asyncio.wait_for(told, 10)
        assert not address.startswith("@")  # not the abstract namespace: no permissions
        directory = Path(address).parent
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        await sup.stop("n")
        assert not directory.exists()  # removed with the run


async def test_notify_socket_with_a_long_tmpdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A socket path holds 108 bytes: past that the socket goes to /tmp instead.
    long = tmp_path / ("d" * 100)
    long.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long))
    svc = Service("n", program("notify"), ready=ReadyNotify(timeout=10), output=drop)
    async with Supervisor([svc]) as sup:
        status = await asyncio.wait_for(sup.start("n"), 10)
        assert status.state is ServiceState.RUNNING


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

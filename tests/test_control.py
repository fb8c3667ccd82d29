"""The control endpoint served from inside an application (aioproc.control.serve).

The protocol's edges (malformed, unknown, oversize, silent, many clients), who
may connect (SO_PEERCRED, the socket's mode), stale and live sockets, and the
requests themselves against a real supervisor with real processes. The command
line on top of it, against real ``aioproc run`` processes, is in test_ctl.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import pathlib
import random
import re
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import aioproc.control as control
from aioproc._control._socket import connect
from aioproc.supervisor import LogFile, ReadyLine, Reconfigured, Service, Supervisor

from .helpers import DROP_ROOT, run_python
from .test_cli import AIOPROC

pytestmark = pytest.mark.usefixtures("no_leaks")


def drop(name: str, line: str) -> None:
    """Output sink of the services here."""


def talker(name: str = "talker") -> Service:
    return Service(
        name,
        ["sh", "-c", "trap 'echo ping' USR1; echo hello; while :; do sleep 5 & wait $!; done"],
        ready=ReadyLine("^hello$"),
        output=drop,
    )


@pytest.fixture
def sock_path(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "ctl.sock"


class Conn:
    """A raw protocol connection: send lines, read reply objects."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, path: os.PathLike[str] | str) -> Conn:
        reader, writer = await asyncio.open_unix_connection(sock=connect(path), limit=1 << 24)
        return cls(reader, writer)

    async def send(self, obj: Any) -> None:
        data = obj if isinstance(obj, bytes) else (json.dumps(obj) + "\n").encode()
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self) -> dict[str, Any] | None:
        line = await asyncio.wait_for(self.reader.readline(), 10)
        if not line:
            return None
        obj = json.loads(line)
        assert obj["version"] == 1
        return obj  # type: ignore[no-any-return]

    async def ask(self, request: str, **fields: Any) -> dict[str, Any]:
        await self.send({"version": 1, "request": request, **fields})
        reply = await self.reply()
        assert reply is not None
        return reply

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def conn(path: os.PathLike[str] | str) -> AsyncIterator[Conn]:
    c = await Conn.open(path)
    try:
        yield c
    finally:
        await c.close()


# ------------------------------------------------------------------- public API


def test_public_surface() -> None:
    assert sorted(control.__all__) == sorted(set(control.__all__))
    public = {n for n, o in vars(control).items() if not n.startswith("_")}
    assert public - {"annotations"} <= set(control.__all__)
    for name in control.__all__:
        obj = getattr(control, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__ == "aioproc.control", name
            assert obj.__doc__, name


def test_the_supervisor_never_imports_the_control_layer() -> None:
    root = pathlib.Path(control.__file__).parent / "supervisor"
    for path in root.glob("*.py"):
        imports = re.findall(r"^\s*(?:from|import) \S+", path.read_text(), re.M)
        assert not [i for i in imports if "control" in i], path


# ----------------------------------------------------------------- the socket


async def test_socket_is_0600_published_atomically_and_removed(sock_path: pathlib.Path) -> None:
    async with Supervisor([]) as sup, control.serve(sup, sock_path) as server:
        st = os.lstat(sock_path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert server.path == str(sock_path)
        # The private directory it was bound in is gone.
        assert sorted(os.listdir(sock_path.parent)) == ["ctl.sock"]
    assert os.listdir(sock_path.parent) == []


async def test_a_stale_socket_is_replaced(sock_path: pathlib.Path) -> None:
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(sock_path))  # a socket nobody listens on: a crashed run's
    async with Supervisor([]) as sup, control.serve(sup, sock_path), conn(sock_path) as c:
        assert (await c.ask("status"))["ok"] is True


async def test_a_live_socket_or_a_file_is_not_taken_over(sock_path: pathlib.Path) -> None:
    async with Supervisor([]) as sup, control.serve(sup, sock_path):
        with pytest.raises(control.SocketInUse, match="another supervisor is serving"):
            async with control.serve(sup, sock_path):
                pass  # pragma: no cover
        async with conn(sock_path) as c:  # the first one still serves
            assert (await c.ask("status"))["ok"] is True
    other = sock_path.parent / "file"
    other.write_text("mine")
    with pytest.raises(control.SocketInUse, match="not a socket"):
        async with control.serve(sup, other):
            pass  # pragma: no cover
    assert other.read_text() == "mine"


async def test_long_socket_paths_work(tmp_path: pathlib.Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "ctl.sock"
    assert len(str(path)) > 108
    async with Supervisor([]) as sup, control.serve(sup, path):
        with control.Client(path) as client:
            reply = await asyncio.to_thread(client.request, "status")
    assert reply["services"] == []


# ------------------------------------------------------------- who may connect


@pytest.fixture
def open_dir() -> Iterator[pathlib.Path]:
    """A directory another uid can reach (pytest's tmp_path is 0700)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="aioproc-ctl-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for entry in path.iterdir():
            entry.unlink()
        path.rmdir()


OTHER_UID_CLIENT = (
    """
    import os, socket, sys
    """
    + DROP_ROOT
    + """
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(sys.argv[1])
    except OSError as exc:
        print("connect failed", exc.errno)
        raise SystemExit(0)
    s.sendall(b'{"version": 1, "request": "shutdown"}\\n')
    data = b""
    while not data.endswith(b"\\n"):
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    # Refused, our side is still open: what we send now is taken in and dropped
    # (not a reset), and the connection then ends with a clean EOF.
    s.sendall(b'{"version": 1, "request": "status"}\\n' * 100)
    while chunk := s.recv(65536):
        data += chunk
    print(data.decode(), end="")
    """
)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to drop to another uid")
async def test_another_uid_is_refused_by_peer_credentials(open_dir: pathlib.Path) -> None:
    path = open_dir / "ctl.sock"
    async with Supervisor([talker()]) as sup, control.serve(sup, path):
        await asyncio.wait_for(sup.start("talker"), 10)
        # Open the socket to everyone, as a careless chmod would: SO_PEERCRED still says no.
        os.chmod(path, 0o666)
        res = await asyncio.to_thread(run_python, OTHER_UID_CLIENT, str(path))
        assert res.returncode == 0, res.stderr
        lines = res.stdout.splitlines()
        assert len(lines) == 1  # one error line, then the connection was closed
        reply = json.loads(lines[0])
        assert reply["ok"] is False
        assert reply["error"] == "forbidden"
        assert re.match(r"uid 3\d{6,} may not control this supervisor", reply["message"])
        # The shutdown it asked for did not happen.
        assert sup.status()["talker"].state.value == "running"
        async with conn(path) as c:  # root still may
            assert (await c.ask("status"))["ok"] is True


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to drop to another uid")
async def test_another_uid_cannot_even_connect_to_the_0600_socket(open_dir: pathlib.Path) -> None:
    path = open_dir / "ctl.sock"
    async with Supervisor([]) as sup, control.serve(sup, path):
        res = await asyncio.to_thread(run_python, OTHER_UID_CLIENT, str(path))
    assert res.stdout.strip() == "connect failed 13", res.stderr  # EACCES


# ------------------------------------------------------------- protocol edges


IMPOSTOR = """
import os, socket, sys
uid = int(sys.argv[2])
os.setgroups([])
os.setresgid(uid, uid, uid)
os.setresuid(uid, uid, uid)
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o777)  # anyone may connect: the careless or the malicious
s.listen()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.settimeout(5)
        data = c.recv(65536)
        if data:
            print("got", data.decode(errors="replace").strip(), flush=True)
            c.sendall(b'{"version": 1, "ok": true, "pid": 1, "services": []}\\n')
    except OSError:
        pass
    c.close()
"""

CLIENT_AS = """
import os, sys
from aioproc.control import Client, ControlError  # before: root's files are 0700
uid = int(sys.argv[2])
os.setgroups([])
os.setresgid(uid, uid, uid)
os.setresuid(uid, uid, uid)
try:
    with Client(sys.argv[1], timeout=10) as c:
        print("answered", c.request("status")["ok"])
except ControlError as exc:
    print(exc.code, exc.message)
"""


@contextlib.contextmanager
def impostor(directory: pathlib.Path, uid: int) -> Iterator[tuple[pathlib.Path, list[str]]]:
    """A server that is no supervisor, run as ``uid``, on ``directory/ctl.sock``;
    and, once the block is left, the requests it was told."""
    path = directory / "ctl.sock"
    proc = subprocess.Popen(
        [sys.executable, "-c", IMPOSTOR, str(path), str(uid)], stdout=subprocess.PIPE, text=True
    )
    told: list[str] = []
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        yield path, told
    finally:
        proc.kill()
        out, _ = proc.communicate()
        told.extend(line[4:] for line in out.splitlines() if line.startswith("got "))
        path.unlink(missing_ok=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to run servers as other uids")
def test_a_client_talks_only_to_a_server_it_can_trust() -> None:
    uid = 3_000_000 + os.getpid() % 100_000
    other = uid + 1
    shared = pathlib.Path(tempfile.mkdtemp(prefix="aioproc-shared-"))
    theirs = pathlib.Path(tempfile.mkdtemp(prefix="aioproc-theirs-"))
    try:
        # A directory anyone may write to (as /tmp): another uid put a socket there.
        shared.chmod(0o1777)
        with impostor(shared, uid) as (path, told):
            with pytest.raises(control.ControlError) as info:
                control.Client(path)
            assert info.value.code == "untrusted"
            assert info.value.message == (
                f"{path} is served by uid {uid}, which is neither root, nor the owner of "
                "its directory: not talking to it"
            )
            res = run_python(CLIENT_AS, str(path), str(other))  # nor for another user
            assert res.stdout.startswith(f"untrusted {path} is served by uid {uid}"), res
            ctl = subprocess.run(
                [*AIOPROC, "ctl", "--control", str(path), "status"], capture_output=True, text=True
            )
            assert ctl.returncode == 2
            assert ctl.stderr == f"aioproc ctl: error: {info.value.message}\n"
        assert told == []  # it never heard a request
        # That user's own directory: root talks to that user's supervisor...
        os.chown(theirs, uid, uid)
        theirs.chmod(0o755)
        with impostor(theirs, uid) as (path, told):
            with control.Client(path, timeout=10) as client:
                assert client.request("status")["ok"] is True
            # ... and nobody else but that user does.
            res = run_python(CLIENT_AS, str(path), str(other))
            assert res.stdout.startswith(f"untrusted {path} is served by uid {uid}"), res
            assert run_python(CLIENT_AS, str(path), str(uid)).stdout == "answered True\n"
        assert len(told) == 2
    finally:
        shared.rmdir()
        theirs.rmdir()


async def test_malformed_and_unknown_requests_get_error_replies(sock_path: pathlib.Path) -> None:
    async with Supervisor([talker()]) as sup, control.serve(sup, sock_path), conn(sock_path) as c:
        if True:
            cases: list[tuple[Any, str]] = [
                (b"this is not json\n", "bad-request"),
                (b"\xff\xfe\n", "bad-request"),
                (b"[1, 2]\n", "bad-request"),
                ({"request": "status"}, "unsupported-version"),
                ({"version": 99, "request": "status"}, "unsupported-version"),
                ({"version": 1, "request": "dance"}, "unknown-request"),
                ({"version": 1}, "unknown-request"),
                ({"version": 1, "request": "stop", "names": ["nope"]}, "unknown-service"),
                ({"version": 1, "request": "stop", "names": "talker"}, "bad-request"),
                ({"version": 1, "request": "stop"}, "bad-request"),
                ({"version": 1, "request": "signal", "names": ["talker"], "signal": "NOPE"},
                 "bad-request"),
                ({"version": 1, "request": "logs", "lines": "ten"}, "bad-request"),
                ({"version": 1, "request": "reload"}, "unsupported"),
            ]  # fmt: skip
            for request, code in cases:
                await c.send(request)
                reply = await c.reply()
                assert reply is not None, request
                assert reply["ok"] is False, request
                assert reply["error"] == code, (request, reply)
                assert reply["error"] in control.ERRORS
            # After all that, the same connection still works, and nothing was stopped.
            status = await c.ask("status")
            assert [s["name"] for s in status["services"]] == ["talker"]
            assert sup.status()["talker"].state.value != "stopped"


_ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 3, 2**70, -(2**70), 1.5, float("nan"), float("inf"),
    "", "talker", "all", "HUP", "USR1", "SIGTERM", "0", "-1", "nope", "\x00", "é" * 3,
    "x" * 5000, [], ["talker"], ["talker", "talker"], [1], [None], ["nope"], [[]], {},
    {"talker": 1},
]  # fmt: skip
_REQUESTS = [
    "status", "start", "stop", "restart", "signal", "logs", "reload", "reopen", "wait", "x",
]  # fmt: skip
_FIELDS = ["names", "all", "lines", "follow", "signal", "request", "version", "extra"]


def _odd_request(rng: random.Random) -> dict[str, Any]:
    request: dict[str, Any] = {"version": 1, "request": rng.choice(_REQUESTS)}
    for key in rng.sample(_FIELDS, rng.randint(0, 4)):
        request[key] = rng.choice(_ODD_VALUES)
    if request.get("request") == "shutdown":
        request["request"] = "status"  # the one request that would end the test
    if request.get("request") == "wait":
        timeout = request.get("timeout")
        if timeout is None or (isinstance(timeout, (int, float)) and not isinstance(timeout, bool)):
            request["timeout"] = 0.05  # a wait for a stopped service would last for ever
    return request


async def test_random_requests_get_replies_never_internal_errors(sock_path: pathlib.Path) -> None:
    """Requests of every shape with fields of every type: each gets an ``ok`` reply
    or a documented error (never ``internal error``), and the endpoint keeps serving."""
    rng = random.Random(20261206)
    errors: list[Any] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        async with Supervisor([talker()]) as sup, control.serve(sup, sock_path):
            await asyncio.wait_for(sup.start("talker"), 10)
            for _ in range(300):
                request = _odd_request(rng)
                async with conn(sock_path) as c:
                    await c.send(request)
                    reply = await c.reply()  # a logs -f sends more: only the first matters
                assert reply is not None, request
                if reply["ok"] is not True:
                    assert reply["error"] in control.ERRORS, (request, reply)
                    assert "internal error" not in reply["message"], (request, reply)
            async with conn(sock_path) as c:
                assert (await c.ask("status"))["ok"] is True
    finally:
        loop.set_exception_handler(None)
    assert errors == []


async def test_an_oversize_line_is_cut_off_at_the_bound(sock_path: pathlib.Path) -> None:
    async with Supervisor([]) as sup, control.serve(sup, sock_path):
        client = connect(sock_path, timeout=30)
        sent = []

        def flood() -> None:
            chunk = b"x" * (1 << 20)
            try:
                for _ in range(100):  # 100 MB, no newline
                    client.sendall(chunk)
                    sent.append(len(chunk))
            except OSError:
                pass  # the server closed the connection: the point

        thread = threading.Thread(target=flood)
        thread.start()
        try:
            data = b""
            while True:
                try:
                    chunk = await asyncio.to_thread(client.recv, 65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                data += chunk
        finally:
            await asyncio.to_thread(thread.join)
            client.close()
        reply = json.loads(data.splitlines()[0])
        assert reply["error"] == "too-long"
        assert str(control.MAX_LINE) in reply["message"]
        assert sum(sent) < 100 << 20  # cut off well before the end
        async with conn(sock_path) as c:  # the endpoint is fine
            assert (await c.ask("status"))["ok"] is True


async def test_a_silent_client_is_timed_out(sock_path: pathlib.Path) -> None:
    async with Supervisor([]) as sup, control.serve(sup, sock_path, request_timeout=0.3):
        async with conn(sock_path) as c:
            reply = await c.reply()  # sends nothing; gets a reply anyway
            assert reply is not None
            assert reply["error"] == "timeout"
            assert await c.reply() is None  # and the connection is closed
            # A partial line does not reset the clock either.
        async with conn(sock_path) as c:
            await c.send(b'{"version": 1, ')
            reply = await c.reply()
            assert reply is not None
            assert reply["error"] == "timeout"


async def test_many_clients_at_once_do_not_stall_the_endpoint(sock_path: pathlib.Path) -> None:
    async with Supervisor([talker()]) as sup, control.serve(sup, sock_path):
        await asyncio.wait_for(sup.start("talker"), 10)
        silent = [await Conn.open(sock_path) for _ in range(40)]
        try:
            async with contextlib.AsyncExitStack() as stack:
                busy = [await stack.enter_async_context(conn(sock_path)) for _ in range(20)]
                replies = await asyncio.wait_for(
                    asyncio.gather(*(c.ask("status") for c in busy)), 5
                )
            assert all(r["services"][0]["state"] == "running" for r in replies)
            # Past MAX_CLIENTS, a connection is told so and closed.
            more = [await Conn.open(sock_path) for _ in range(control.MAX_CLIENTS)]
            try:
                errors = await asyncio.wait_for(asyncio.gather(*(c.reply() for c in more[-5:])), 5)
            finally:
                for c in more:
                    await c.close()
            assert all(e is not None and e["error"] == "busy" for e in errors)
        finally:
            for c in silent:
                await c.close()


# ---------------------------------------------------------------- the requests


async def test_status_start_stop_restart_signal(sock_path: pathlib.Path) -> None:
    services = [talker("db"), talker("api")]
    services[1] = Service("api", services[1].argv, ready=ReadyLine("^hello$"), output=drop,
                          depends_on=["db"])  # fmt: skip
    sup = Supervisor(services)
    async with control.serve(sup, sock_path), sup, conn(sock_path) as c:
        if True:
            await asyncio.wait_for(sup.start("api"), 10)
            status = await c.ask("status")
            assert status["pid"] == os.getpid()
            rows = {s["name"]: s for s in status["services"]}
            assert list(rows) == ["db", "api"]
            assert rows["api"]["state"] == "running"
            assert rows["api"]["ready"] is True
            assert rows["api"]["ready_check"] == "ReadyLine"
            assert rows["api"]["wanted"] is True
            assert rows["api"]["reason"] == "ready"
            old = rows["api"]["pid"]

            stopped = await c.ask("stop", all=True)  # api first, then db
            assert [s["state"] for s in stopped["services"]] == ["stopped", "stopped"]
            assert all(s["wanted"] is False for s in stopped["services"])
            assert stopped["services"][0]["reason"] == "stopped"
            started = await c.ask("start", names=["api", "db"])  # api waits for db
            assert [s["state"] for s in started["services"]] == ["running", "running"]
            # Starting api starts what it needs that is stopped.
            await c.ask("stop", all=True)
            started = await c.ask("start", names=["api"])
            assert [s["name"] for s in started["services"]] == ["api"]
            assert started["services"][0]["state"] == "running"
            assert sup.status()["db"].state.value == "running"
            again = await c.ask("restart", names=["api"])
            assert again["services"][0]["pid"] not in (None, old)
            assert again["services"][0]["last_exit"]["signal"] == "SIGTERM"

            follow = await Conn.open(sock_path)
            try:
                await follow.send({"version": 1, "request": "logs", "names": ["db"],
                                   "lines": 0, "follow": True})  # fmt: skip
                assert (await follow.reply()) == {"version": 1, "ok": True}
                assert (await c.ask("signal", names=["db"], signal="USR1"))["ok"] is True
                line = await follow.reply()
                assert line is not None
                assert line["line"]["service"] == "db"
                assert line["line"]["text"] == "ping"
            finally:
                await follow.close()
            bad = await c.ask("signal", names=["db"], signal=0)  # no such Signals member
            assert bad["error"] == "bad-request"


async def test_logs_history_then_live_then_end_at_shutdown(sock_path: pathlib.Path) -> None:
    async with control.serve(Supervisor([talker()]), sock_path) as server:
        async with server.supervisor as sup:
            await asyncio.wait_for(sup.start("talker"), 10)
            async with conn(sock_path) as c:
                await c.send({"version": 1, "request": "logs", "lines": 5})
                got = [await c.reply() for _ in range(3)]
                assert got[0] == {"version": 1, "ok": True}
                assert got[1]["line"]["text"] == "hello"  # type: ignore[index]
                assert got[2] == {"version": 1, "end": True}
            follower = await Conn.open(sock_path)
            await follower.send({"version": 1, "request": "logs", "follow": True})
            assert (await follower.reply()) == {"version": 1, "ok": True}
            assert (await follower.reply())["line"]["text"] == "hello"  # type: ignore[index]
            sup.send_signal("talker", 10)  # SIGUSR1
            assert (await follower.reply())["line"]["text"] == "ping"  # type: ignore[index]
            # A follower that leaves while nothing is written is noticed (no leak).
            leaver = await Conn.open(sock_path)
            await leaver.send({"version": 1, "request": "logs", "follow": True})
            assert (await leaver.reply()) == {"version": 1, "ok": True}
            await leaver.close()
        # Shut down: the follower gets the end, then EOF.
        rest = []
        while (reply := await follower.reply()) is not None:
            rest.append(reply)
        assert rest[-1] == {"version": 1, "end": True}
        await follower.close()


async def test_shutdown_replies_then_closes_when_everything_stopped(
    sock_path: pathlib.Path,
) -> None:
    sup = Supervisor([talker()])
    async with control.serve(sup, sock_path), sup:
        await asyncio.wait_for(sup.start("talker"), 10)
        async with conn(sock_path) as c:
            assert (await c.ask("shutdown")) == {"version": 1, "ok": True}
            outcome = await asyncio.wait_for(sup.wait(), 10)
            assert outcome.ok
            assert sup.status()["talker"].state.value == "stopped"
            late = await Conn.open(sock_path)
            assert (await late.ask("start", names=["talker"]))["error"] == "shutting-down"
            await late.close()
    # Leaving serve() closed the connection that asked.
    assert await c.reply() is None


async def test_reload_calls_the_given_function(sock_path: pathlib.Path) -> None:
    calls = []

    async def reload() -> Reconfigured:
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("aioproc.toml:3: bad")
        return Reconfigured(added=("x",), unchanged=("y",))

    logged: list[str] = []
    sup = Supervisor([])
    server = control.serve(sup, sock_path, reload=reload, log=logged.append)
    async with sup, server, conn(sock_path) as c:
        if True:
            ok = await c.ask("reload")
            assert ok == {"version": 1, "ok": True, "added": ["x"], "removed": [],
                          "changed": [], "unchanged": ["y"]}  # fmt: skip
            bad = await c.ask("reload")
            assert bad["error"] == "failed"
            assert bad["message"] == "aioproc.toml:3: bad"
    assert logged == ["reload failed, nothing changed: aioproc.toml:3: bad"]


def real(path: pathlib.Path) -> str:
    return os.path.realpath(path)


async def test_reopen_opens_the_log_files_again(tmp_path: pathlib.Path) -> None:
    sock_path = tmp_path / "ctl.sock"
    log = tmp_path / "logs" / "t.log"
    log.parent.mkdir()
    svc = Service(
        "talker",
        ["sh", "-c", "trap 'echo ping' USR1; echo hello; while :; do sleep 5 & wait $!; done"],
        ready=ReadyLine("^hello$"),
        output=LogFile(log, max_bytes=1 << 20),
    )
    logged: list[str] = []
    sup = Supervisor([svc])
    async with sup, control.serve(sup, sock_path, log=logged.append), conn(sock_path) as c:
        await sup.start("talker")  # ready: its log file is open
        log.rename(tmp_path / "t.log.old")
        reply = await c.ask("reopen")
        assert reply == {"version": 1, "ok": True, "files": [real(log)]}
        assert logged == [f"log files reopened: {real(log)}"]
        assert (await c.ask("signal", names=["talker"], signal="USR1"))["ok"] is True
        deadline = asyncio.get_running_loop().time() + 10
        while log.read_bytes() != b"ping\n":  # the file (under test) receives the line
            assert asyncio.get_running_loop().time() < deadline, log.read_bytes()
            await asyncio.sleep(0.005)
        assert (tmp_path / "t.log.old").read_bytes() == b"hello\n"
        # A file that cannot be opened again: an error reply naming it, still written.
        log.rename(tmp_path / "t.log.older")
        log.parent.rmdir()
        failed = await c.ask("reopen")
        assert failed["error"] == "failed"
        assert failed["message"].startswith(f"cannot reopen log file {real(log)!r}")
        assert logged[-1] == failed["message"] + " (still writing where it was)"
        await c.ask("stop", names=["talker"])
        assert (await c.ask("reopen"))["files"] == []  # closed with the run


async def test_a_failing_operation_is_an_error_reply_not_a_crash(sock_path: pathlib.Path) -> None:
    seen: list[dict[str, Any]] = []

    async def reload() -> Reconfigured:
        raise ZeroDivisionError("a bug in the reload function")

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: seen.append(context))
    try:
        sup = Supervisor([])
        async with sup, control.serve(sup, sock_path, reload=reload), conn(sock_path) as c:
            reply = await c.ask("reload")
            assert reply["error"] == "failed"
            assert "ZeroDivisionError" in reply["message"]
            assert (await c.ask("status"))["ok"] is True  # still serving
    finally:
        loop.set_exception_handler(None)
    assert [type(s.get("exception")) for s in seen] == [ZeroDivisionError]


@pytest.mark.parametrize("odd", [float("nan"), float("inf"), 0.0, -1.0])
def test_serve_refuses_an_odd_request_timeout(tmp_path: pathlib.Path, odd: float) -> None:
    sup = Supervisor([Service("s", ["true"])])
    with pytest.raises(ValueError, match=r"^request_timeout must"):
        control.serve(sup, tmp_path / "c.sock", request_timeout=odd)
    assert not (tmp_path / "c.sock").exists()

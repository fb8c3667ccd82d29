"""The HTTP face: ``aioproc run --http`` with real HTTP clients, and ``aioproc.http.serve``.

Every endpoint against a real ``aioproc run`` subprocess, which runs on the same
kind of loop as the test (asyncio, or uvloop through its policy), with httpx as
the client: the JSON API, a restart (the pid changes), a signal, a reload, the
log history and its live follow, ``/metrics`` parsed by prometheus_client's own
parser, the probes, the OpenAPI document. Who is refused: no token or a wrong
one (401), a cross-site POST (403), a GET on a mutating route (405), a foreign
Host without a token (403), a non-loopback address without a token (exit 2).
And the bounds: a client that never reads its follow and one that trickles its
headers stall neither the other clients nor the services' output. Each test
waits for what it expects to read, never for a time.
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
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import aioproc.http as http
from aioproc.supervisor import Service, Supervisor

from .test_cli import AIOPROC

CONFIG = """
[supervisor]
shutdown_timeout = 10

[services.db]
command = "trap 'echo db got HUP' HUP; echo db up; while :; do sleep 30 & wait $!; done"
ready = { line = "^db up$" }

[services.slow]
command = "trap 'echo ready now' USR1; echo waiting; while :; do sleep 30 & wait $!; done"
ready = { line = "^ready now$" }
essential = true

[services.web]
command = "echo web up; exec sleep 60"
depends_on = ["db"]
"""

TOKEN = "s3cret-token"


def _uvloop() -> bool:
    return type(asyncio.get_running_loop()).__module__.startswith("uvloop")


class Run:
    """``aioproc run --http 127.0.0.1:0`` in a directory, on the test's kind of loop."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._grew = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())
        self.url = ""

    @classmethod
    async def start(
        cls, directory: pathlib.Path, *args: str, env: dict[str, str] | None = None
    ) -> Run:
        argv = [*AIOPROC, "run", "--no-control", *args]
        if _uvloop():
            code = (
                "import asyncio, sys, uvloop;"
                "asyncio.set_event_loop_policy(uvloop.EventLoopPolicy());"
                "from aioproc._cli import main; sys.exit(main(sys.argv[1:]))"
            )
            argv = [sys.executable, "-W", "ignore", "-c", code, *argv[3:]]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=directory,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1", **(env or {})},
        )
        run = cls(proc)
        run.url = (await run.until(r"serving HTTP at (http://\S+)/")).group(1)
        return run

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self._grew.set()
        self._grew.set()

    async def until(self, pattern: str, timeout: float = 15.0, start: int = 0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        checked = start
        while True:
            for i in range(checked, len(self.lines)):
                if m := regex.search(self.lines[i]):
                    return m
            checked = len(self.lines)
            left = deadline - time.monotonic()
            if self._reader.done() or left <= 0:
                tail = [line[:160] for line in self.lines[-10:]]
                raise AssertionError(f"no line matching {pattern!r} in ...{tail}")
            self._grew.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._grew.wait(), left)

    async def close(self) -> int:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
        try:
            code = await asyncio.wait_for(self.proc.wait(), 20)
        except asyncio.TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        await self._reader
        return code


@contextlib.asynccontextmanager
async def running(
    tmp_path: pathlib.Path, config: str = CONFIG, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[Run, httpx.AsyncClient]]:
    (tmp_path / "aioproc.toml").write_text(config)
    run = await Run.start(tmp_path, "--http", "127.0.0.1:0", *args, env=env)
    try:
        async with httpx.AsyncClient(base_url=run.url, timeout=20) as client:
            yield run, client
    finally:
        await run.close()


async def services(client: httpx.AsyncClient, **kw: Any) -> dict[str, dict[str, Any]]:
    reply = await client.get("/api/v1/services", **kw)
    assert reply.status_code == 200, reply.text
    return {s["name"]: s for s in reply.json()["services"]}


async def until_state(client: httpx.AsyncClient, name: str, state: str) -> dict[str, Any]:
    """Poll the API (the thing under test) until ``name`` is in ``state``."""
    deadline = time.monotonic() + 15
    while True:
        row = (await services(client))[name]
        if row["state"] == state:
            return row
        assert time.monotonic() < deadline, row
        await asyncio.sleep(0.05)


async def sse(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """(event, data) of a text/event-stream reply."""
    kind, data = "message", ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif not line and data:
            yield kind, json.loads(data)
            kind, data = "message", ""


# ------------------------------------------------------------------ public API


def test_public_surface() -> None:
    assert sorted(http.__all__) == sorted(set(http.__all__))
    public = {n for n, o in vars(http).items() if not n.startswith("_")}
    assert public - {"annotations", "Log", "Reload", "Supervisor"} <= set(http.__all__)
    for name in http.__all__:
        obj = getattr(http, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__ == "aioproc.http", name
            assert obj.__doc__, name


def test_only_the_operator_layers_import_http() -> None:
    root = pathlib.Path(http.__file__).parent
    for path in [*root.glob("*.py"), *root.glob("supervisor/*.py"), *root.glob("_control/*.py")]:
        if path.name == "http.py":
            continue
        imports = re.findall(r"^\s*(?:from|import) (\S+)", path.read_text(), re.M)
        assert not [i for i in imports if "_http" in i or i in (".http", "..http")], path


def test_a_non_loopback_address_needs_a_token() -> None:
    sup = Supervisor([])
    with pytest.raises(ValueError, match="needs a token"):
        http.serve(sup, "0.0.0.0", 0)
    with pytest.raises(ValueError, match="needs a token"):
        http.serve(sup, "example.com", 0)
    http.serve(sup, "0.0.0.0", 0, token="t")  # fine with one
    http.serve(sup, "::1", 0)
    http.serve(sup, "localhost", 0)
    assert http.parse_address("[::1]:9100") == ("::1", 9100)
    assert http.parse_address(":9100") == ("127.0.0.1", 9100)
    for odd in ("127.0.0.1:\u00b2", "127.0.0.1:\u0661", "127.0.0.1:-1"):
        with pytest.raises(ValueError, match="is not HOST:PORT"):
            http.parse_address(odd)
    with pytest.raises(ValueError, match="HOST:PORT"):
        http.parse_address("9100x")


@pytest.mark.parametrize(
    ("args", "config", "env"),
    [
        (["--http", "0.0.0.0:0"], "", {}),
        ([], '[supervisor]\nhttp = "0.0.0.0:0"\n', {}),
        (["--http", "192.0.2.1:0"], "", {"AIOPROC_HTTP_TOKEN": ""}),
    ],
)
def test_run_refuses_a_non_loopback_address_without_a_token(
    tmp_path: pathlib.Path, args: list[str], config: str, env: dict[str, str]
) -> None:
    import subprocess

    (tmp_path / "aioproc.toml").write_text(
        config + '[services.a]\ncommand = "echo started > started; exec sleep 30"\n'
    )
    done = subprocess.run(
        [*AIOPROC, "run", "--no-control", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={**{k: v for k, v in os.environ.items() if k != "AIOPROC_HTTP_TOKEN"}, **env},
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    assert "is not a loopback address" in lines[0]
    assert "--http-token or AIOPROC_HTTP_TOKEN" in lines[0]
    if config:
        assert lines[0].startswith("aioproc: error: ")
        assert "aioproc.toml:2" in lines[0]
    assert not (tmp_path / "started").exists()


# ---------------------------------------------------------- aioproc run --http


async def test_every_endpoint(tmp_path: pathlib.Path) -> None:
    async with running(tmp_path) as (run, client):
        await run.until(r"\| web started")
        await run.until(r"\| slow started")
        listed = await services(client)
        assert list(listed) == ["db", "slow", "web"]
        web = await until_state(client, "web", "running")
        assert isinstance(web["pid"], int)
        assert web["restarts"] == 0
        assert web["ready"] is True
        assert web["uptime"] >= 0
        assert web["last_exit"] is None
        assert web["reason"] == "ready"
        assert web["cpu_seconds"] >= 0
        assert web["rss_bytes"] > 100_000
        assert listed["slow"]["state"] == "starting"
        assert listed["slow"]["ready"] is False

        one = (await client.get("/api/v1/services/db")).json()
        assert one["name"] == "db"
        assert one["state"] == "running"
        missing = await client.get("/api/v1/services/nope")
        assert missing.status_code == 404
        assert missing.json()["error"] == "unknown-service"

        assert (await client.get("/healthz")).json()["ok"] is True
        # slow is essential and not ready: /readyz says so, until a signal makes it.
        not_ready = await client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["not_ready"] == ["slow"]
        sent = await client.post("/api/v1/services/slow/signal", json={"signal": "USR1"})
        assert sent.status_code == 200, sent.text
        await until_state(client, "slow", "running")
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["not_ready"] == []

        bad = await client.post("/api/v1/services/db/signal", json={"signal": "NOPE"})
        assert bad.status_code == 400
        assert "unknown signal" in bad.json()["message"]
        notjson = await client.post("/api/v1/services/db/signal", content=b"{")
        assert notjson.status_code == 400
        huge = await client.post("/api/v1/services/db/signal", content=b"x" * 200_000)
        assert huge.status_code == 413

        mark = len(run.lines)
        assert (await client.post("/api/v1/services/db/signal", json={"signal": "HUP"})).is_success
        await run.until(r"db\s+\| db got HUP", start=mark)
        logs = (await client.get("/api/v1/services/db/logs", params={"lines": 2})).json()
        assert [x["text"] for x in logs["lines"]] == ["db up", "db got HUP"]
        assert all(x["service"] == "db" for x in logs["lines"])
        assert (await client.get("/api/v1/services/db/logs?lines=x")).status_code == 400
        # A digit to str.isdigit(), not to int(): still a 400, not a 500.
        for odd in ("\u00b2", "\u0661", "-1", "1e3"):
            bad = await client.get("/api/v1/services/db/logs", params={"lines": odd})
            assert bad.status_code == 400, odd
            assert bad.json()["error"] == "bad-request"
            assert (await client.get("/api/v1/events", params={"lines": odd})).status_code == 400

        # reload: the file gains a service
        (tmp_path / "aioproc.toml").write_text(
            CONFIG + '\n[services.extra]\ncommand = "sleep 60"\n'
        )
        reloaded = await client.post("/api/v1/reload")
        assert reloaded.status_code == 200
        assert reloaded.json()["added"] == ["extra"]
        assert "extra" in await services(client)
        (tmp_path / "aioproc.toml").write_text("[services.x]\nbad = 1\n")
        refused = await client.post("/api/v1/reload")
        assert refused.status_code == 409
        assert "aioproc.toml" in refused.json()["message"]

        spec = (await client.get("/openapi.json")).json()
        assert spec["openapi"].startswith("3.")
        for path in (
            "/api/v1/services",
            "/api/v1/services/{name}/restart",
            "/api/v1/services/{name}/logs",
            "/metrics",
            "/readyz",
        ):
            assert path in spec["paths"], path

        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'sha256-" in page.headers["content-security-policy"]


async def test_metrics_parse(tmp_path: pathlib.Path) -> None:
    async with running(tmp_path) as (run, client):
        await until_state(client, "web", "running")
        reply = await client.get("/metrics")
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(reply.text)}
        expected = {
            "aioproc_service_up": "gauge",
            "aioproc_service_ready": "gauge",
            "aioproc_service_restarts": "counter",
            "aioproc_service_last_exit_code": "gauge",
            "aioproc_service_state_changes": "counter",
            "aioproc_service_cpu_seconds": "counter",
            "aioproc_service_resident_memory_bytes": "gauge",
            "aioproc_build_info": "gauge",
        }
        for name, kind in expected.items():
            assert families[name].type == kind, name

        def value(family: str, service: str, suffix: str = "") -> float:
            for s in families[family].samples:
                if s.name == family + suffix and s.labels.get("service") == service:
                    return s.value
            raise AssertionError((family, service))

        assert value("aioproc_service_up", "web") == 1
        assert value("aioproc_service_ready", "web") == 1
        assert value("aioproc_service_ready", "slow") == 0
        assert value("aioproc_service_restarts", "web", "_total") == 0
        assert value("aioproc_service_state_changes", "web", "_total") >= 2
        assert value("aioproc_service_resident_memory_bytes", "web") > 100_000
        build = families["aioproc_build_info"].samples[0]
        assert build.labels["version"]
        assert build.value == 1
        # After a kill: the exit code (-9), a restart, more state changes.
        pid = (await services(client))["web"]["pid"]
        os.kill(pid, 9)
        await run.until(r"web was killed by SIGKILL")
        await until_state(client, "web", "running")
        again = {
            f.name: f for f in text_string_to_metric_families((await client.get("/metrics")).text)
        }
        families = again
        assert value("aioproc_service_last_exit_code", "web") == -9
        assert value("aioproc_service_restarts", "web", "_total") == 1


async def test_restart_through_the_api_changes_the_pid(tmp_path: pathlib.Path) -> None:
    async with running(tmp_path) as (run, client):
        before = await until_state(client, "web", "running")
        reply = await client.post("/api/v1/services/web/restart")
        assert reply.status_code == 200, reply.text
        after = reply.json()
        assert after["state"] == "running"
        assert after["pid"] != before["pid"]
        assert (await services(client))["web"]["pid"] == after["pid"]
        await run.until(rf"web started, pid {after['pid']}")
        stopped = (await client.post("/api/v1/services/web/stop")).json()
        assert stopped["state"] == "stopped"
        assert stopped["pid"] is None
        started = (await client.post("/api/v1/services/web/start")).json()
        assert started["state"] == "running"
        assert started["pid"] not in (None, after["pid"])


async def test_live_follow(tmp_path: pathlib.Path) -> None:
    async with running(tmp_path) as (_run, client):
        await until_state(client, "db", "running")
        url = "/api/v1/services/db/logs?lines=1&follow=1"
        async with client.stream("GET", url) as reply:
            assert reply.headers["content-type"].startswith("text/event-stream")
            events = sse(reply)
            assert await anext(events) == (
                "log",
                {"service": "db", "time": pytest.approx(time.time(), abs=60), "text": "db up"},
            )
            await client.post("/api/v1/services/db/signal", json={"signal": "HUP"})
            kind, data = await asyncio.wait_for(anext(events), 10)
            assert (kind, data["text"]) == ("log", "db got HUP")
            await events.aclose()
        # The dashboard's stream: status at once, then again after a change.
        async with client.stream("GET", "/api/v1/events?lines=5") as reply:
            events = sse(reply)
            kind, data = await anext(events)
            assert kind == "status"
            assert [s["name"] for s in data["services"]] == [
                "db",
                "slow",
                "web",
            ]
            await client.post("/api/v1/services/web/stop")
            while True:
                kind, data = await asyncio.wait_for(anext(events), 10)
                states = {s["name"]: s["state"] for s in data.get("services", [])}
                if kind == "status" and states["web"] == "stopped":
                    break
            await events.aclose()


async def test_token_refusals(tmp_path: pathlib.Path) -> None:
    env = {"AIOPROC_HTTP_TOKEN": TOKEN}
    async with running(tmp_path, CONFIG, env=env) as (run, client):
        good = {"Authorization": f"Bearer {TOKEN}"}
        for path in ("/api/v1/services", "/metrics", "/healthz", "/readyz", "/openapi.json"):
            none = await client.get(path)
            assert none.status_code == 401, path
            assert none.headers["www-authenticate"].startswith("Bearer")
            wrong = await client.get(path, headers={"Authorization": f"Bearer {TOKEN}x"})
            assert wrong.status_code == 401, path
            assert (await client.get(path, headers=good)).status_code in (200, 503), path
        assert (await client.post("/api/v1/services/web/restart")).status_code == 401
        assert (await client.get("/")).status_code == 200  # the page: no data, no token
        assert "sessionStorage" in (await client.get("/")).text
        # With a token any Host is fine (the token is the check).
        assert (await client.get("/healthz", headers={**good, "Host": "a.example"})).is_success
        # Mutations: POST only, and same-origin only.
        assert (await client.get("/api/v1/services/web/restart", headers=good)).status_code == 405
        assert (await client.get("/api/v1/reload", headers=good)).status_code == 405
        cross = {**good, "Origin": "http://evil.example"}
        assert (await client.post("/api/v1/services/web/stop", headers=cross)).status_code == 403
        site = {**good, "Sec-Fetch-Site": "cross-site"}
        assert (await client.post("/api/v1/services/web/stop", headers=site)).status_code == 403
        assert (await services(client, headers=good))["web"]["state"] == "running"
        own = {**good, "Origin": run.url}
        assert (await client.post("/api/v1/services/web/stop", headers=own)).status_code == 200


def real(path: pathlib.Path) -> str:
    return os.path.realpath(path)


LOGGED = """
[services.w]
command = "echo up; exec sleep 60"
output = { file = "w.log", max_bytes = "1M" }
"""


async def test_reopen_logs_route_is_a_guarded_mutation(tmp_path: pathlib.Path) -> None:
    env = {"AIOPROC_HTTP_TOKEN": TOKEN}
    log = real(tmp_path / "w.log")
    async with running(tmp_path, LOGGED, env=env) as (run, client):
        await run.until(r"\| w started")
        good = {"Authorization": f"Bearer {TOKEN}"}
        route = "/api/v1/logs/reopen"
        assert (await client.post(route)).status_code == 401
        assert (await client.post(route, headers={"Authorization": "Bearer x"})).status_code == 401
        assert (await client.get(route, headers=good)).status_code == 405
        cross = {**good, "Origin": "http://evil.example"}
        assert (await client.post(route, headers=cross)).status_code == 403
        site = {**good, "Sec-Fetch-Site": "cross-site"}
        assert (await client.post(route, headers=site)).status_code == 403
        assert not [line for line in run.lines if "reopened" in line]  # none got through
        (tmp_path / "w.log").rename(tmp_path / "w.log.old")
        reply = await client.post(route, headers=good)
        assert reply.status_code == 200, reply.text
        assert reply.json() == {"ok": True, "files": [log]}
        await run.until(rf"^aioproc \| log files reopened: {re.escape(log)}$")
        assert (tmp_path / "w.log").exists()  # a new, empty file at the path
        spec = (await client.get("/openapi.json", headers=good)).json()
        assert "post" in spec["paths"][route]


async def test_reopen_logs_route_without_a_token(tmp_path: pathlib.Path) -> None:
    async with running(tmp_path, LOGGED) as (run, client):
        await run.until(r"\| w started")
        route = "/api/v1/logs/reopen"
        assert (await client.post(route, headers={"Host": "evil.example"})).status_code == 403
        (tmp_path / "w.log").unlink()
        (tmp_path / "w.log").mkdir()  # cannot be opened as a file any more
        failed = await client.post(route)
        assert failed.status_code == 409
        assert failed.json()["error"] == "failed"
        assert "Is a directory" in failed.json()["message"]
        (tmp_path / "w.log").rmdir()
        assert (await client.post(route)).json()["files"] == [real(tmp_path / "w.log")]


async def test_shutdown_route_is_a_guarded_mutation_that_ends_the_run(
    tmp_path: pathlib.Path,
) -> None:
    env = {"AIOPROC_HTTP_TOKEN": TOKEN}
    async with running(tmp_path, env=env) as (run, client):
        await run.until(r"\| web started")
        good = {"Authorization": f"Bearer {TOKEN}"}
        route = "/api/v1/shutdown"
        assert (await client.post(route)).status_code == 401
        assert (await client.get(route, headers=good)).status_code == 405
        cross = {**good, "Origin": "http://evil.example"}
        assert (await client.post(route, headers=cross)).status_code == 403
        site = {**good, "Sec-Fetch-Site": "cross-site"}
        assert (await client.post(route, headers=site)).status_code == 403
        assert run.proc.returncode is None
        assert (await services(client, headers=good))["web"]["state"] == "running"
        spec = (await client.get("/openapi.json", headers=good)).json()
        assert "post" in spec["paths"][route]
        reply = await client.post(route, headers=good)
        assert reply.status_code == 202, reply.text
        assert reply.json() == {"ok": True, "pid": run.proc.pid}
        assert await asyncio.wait_for(run.proc.wait(), 20) == 0
        await run.until(r"^aioproc \| http: shutdown requested$")
        assert run.lines.index("aioproc | web stopped") < run.lines.index("aioproc | db stopped")
        with pytest.raises(httpx.ConnectError):
            await client.get("/healthz", headers=good)


_ODD_BODIES: list[Any] = [
    None, b"", b"not json", b"\xff\xfe", b"[1]", b"NaN", b'{"signal": null}', b'{"signal": []}',
    b'{"signal": "NOPE"}', b'{"signal": 2e400}', b'{"signal": 99999999999999999999}',
    b'{"signal": "0"}', b'{"signal": -1}', b'{"signal": "USR1"}', b"{" * 10000,
]  # fmt: skip
_ODD_QUERIES = ["", "lines=", "lines=-1", "lines=\u00b2", "lines=\u0661", "lines=1e3",
                "lines=99999999999999999999", "lines=5", "follow=maybe", "lines=%00"]  # fmt: skip
_ODD_NAMES = ["db", "nope", "all", "%00", "..", "%2e%2e", "a" * 3000, "%ff", "web%20"]


async def test_random_requests_are_answered_never_with_a_server_error(
    tmp_path: pathlib.Path,
) -> None:
    """Routes with odd names, bodies and queries: a 2xx or 4xx with a JSON error each
    (never a 500), and the server keeps serving."""
    rng = random.Random(20261206)
    async with running(tmp_path) as (run, client):
        await run.until(r"\| web started")
        for query in _ODD_QUERIES:  # each odd query once, where it is read
            if "follow" not in query:
                reply = await client.get(f"/api/v1/services/db/logs?{query}")
                assert reply.status_code in (200, 400), (query, reply.text)
        for _ in range(200):
            name = rng.choice(_ODD_NAMES)
            path = rng.choice(
                [
                    f"/api/v1/services/{name}",
                    f"/api/v1/services/{name}/logs",
                    f"/api/v1/services/{name}/signal",
                    f"/api/v1/services/{name}/{rng.choice(['start', 'stop', 'restart', 'x'])}",
                    "/api/v1/services",
                    "/api/v1/events",
                    "/api/v1/reload",
                    "/api/v1/logs/reopen",
                ]
            )
            query = rng.choice(_ODD_QUERIES)
            method = rng.choice(["GET", "POST", "PUT", "DELETE"])
            if path == "/api/v1/events" or "follow" in query:
                method = "POST"  # a GET would stream: not this test's business
            body = rng.choice(_ODD_BODIES)
            reply = await client.request(
                method,
                f"{path}?{query}",
                content=body,
                headers={"Content-Type": "application/json"},
            )
            assert reply.status_code < 500, (method, path, query, body, reply.text)
            if reply.status_code >= 400 and reply.status_code not in (404, 405):
                assert reply.json()["ok"] is False, (method, path, query, body, reply.text)
        assert (await client.get("/healthz")).status_code == 200
    assert not [line for line in run.lines if "Traceback" in line or "Error handling" in line]


async def test_host_check_without_a_token(tmp_path: pathlib.Path) -> None:
    async with running(tmp_path) as (run, client):
        port = run.url.rsplit(":", 1)[1]
        for host in ("evil.example", f"evil.example:{port}", "10.0.0.1", "127.0.0.1.nip.io"):
            reply = await client.get("/api/v1/services", headers={"Host": host})
            assert reply.status_code == 403, host
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
            assert (await client.get("/healthz", headers={"Host": host})).status_code == 200


CHATTY_CODE = "import time\\ni = 0\\nwhile 1: i += 1; print(i, 'x' * 2000); time.sleep(0.001)"
CHATTY = f"""
[services.chatty]
command = "python3 -uc \\"{CHATTY_CODE}\\" | sed -u 's/^/tick /'"

[services.quiet]
command = "exec sleep 60"
"""


async def test_slow_clients_stall_nothing(tmp_path: pathlib.Path) -> None:
    """A follower that never reads and a client trickling its headers: the chatty
    service's output keeps flowing to aioproc run's stdout and the API keeps answering."""
    async with running(tmp_path, CHATTY) as (run, client):
        await run.until(r"chatty\s+\| tick 10 ")
        host, port = run.url.removeprefix("http://").rsplit(":", 1)
        # A follower that never reads: a tiny receive buffer, soon full.
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect((host, int(port)))
        stuck.sendall(
            f"GET /api/v1/services/chatty/logs?lines=1000&follow=1 HTTP/1.1\r\nHost: {host}:{port}"
            "\r\n\r\n".encode()
        )
        # A client that sends its request head one byte at a time, slowly.
        trickle = socket.socket()
        trickle.connect((host, int(port)))
        trickle.sendall(b"GET /api/v1/serv")
        try:
            for _ in range(3):
                start = len(run.lines)
                # The output goes on: many more lines than any buffer in between holds.
                last = int((await run.until(r"chatty\s+\| tick (\d+) ", start=start)).group(1))
                await run.until(rf"chatty\s+\| tick {last + 500} ", start=start)
                t0 = time.monotonic()
                assert (await services(client))["quiet"]["state"] == "running"
                assert time.monotonic() - t0 < 2.0
                trickle.sendall(b"i")
        finally:
            stuck.close()
            trickle.close()


# ------------------------------------------------------ embedded: aioproc.http


async def test_embedded_serve_bounds(tmp_path: pathlib.Path) -> None:
    """The library API: a slow head is cut at header_timeout, a stuck follower at
    write_timeout, and connections beyond max_connections are closed."""
    chatty = Service(
        "chatty",
        [sys.executable, "-uc", "import time\nwhile 1: print('y' * 3000); time.sleep(0.0005)"],
        output=lambda name, line: None,
    )
    quiet = Service("quiet", ["sleep", "60"], output=lambda name, line: None)
    sup = Supervisor([chatty, quiet])
    server = http.serve(
        sup, "127.0.0.1", 0, header_timeout=0.5, write_timeout=0.5, max_connections=4
    )
    async with server, sup:
        host, port = "127.0.0.1", server.port
        assert server.url == f"http://127.0.0.1:{port}/"
        loop = asyncio.get_running_loop()
        # A head that never completes: closed after header_timeout.
        r, w = await asyncio.open_connection(host, port)
        w.write(b"GET / HTTP/1.1\r\nHost: 127")
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()
        # A follower that stops reading: its stream ends after write_timeout.
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.setblocking(False)
        await loop.sock_connect(stuck, (host, port))
        await loop.sock_sendall(
            stuck,
            b"GET /api/v1/services/chatty/logs?follow=1 HTTP/1.1\r\n"
            + f"Host: 127.0.0.1:{port}\r\n\r\n".encode(),
        )
        deadline = time.monotonic() + 10
        # The server gives up on it and closes: our end sees its FIN (CLOSE_WAIT).
        while _tcp_state(stuck.getsockname()[1]) == "01":
            assert time.monotonic() < deadline, "the stuck follower was not dropped"
            await asyncio.sleep(0.05)
        stuck.close()
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            assert (await client.get("/api/v1/services/quiet")).json()["state"] == "running"
        await sup.aclose()


def _tcp_state(local_port: int) -> str | None:
    """The state (/proc/net/tcp's hex code, 01 = established) of our socket on ``local_port``."""
    for line in pathlib.Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{local_port:04X}"):
            return fields[3]
    return None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("http = 9100", 'aioproc.toml:3: http must be a string like "127.0.0.1:9100"'),
        ('http_token = ""', "aioproc.toml:3: http_token must be a non-empty string"),
    ],
)
def test_supervisor_http_keys_are_checked(
    tmp_path: pathlib.Path, table: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from aioproc._cli import main
    from aioproc._cli._config import ConfigError, load_config

    path = tmp_path / "aioproc.toml"
    path.write_text(f'\n[supervisor]\n{table}\n[services.a]\ncommand = "true"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value), str(info.value)
    path.write_text('[supervisor]\nhttp = "localhost"\n[services.a]\ncommand = "true"\n')
    assert main(["run", "--no-control", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].endswith("aioproc.toml:2: 'localhost' is not HOST:PORT (like 127.0.0.1:9100)")
    path.write_text(
        '[supervisor]\nhttp = "[::1]:0"\nhttp_token = "t"\n[services.a]\ncommand = "true"\n'
    )
    config = load_config(path)
    assert (config.http, config.http_token) == ("[::1]:0", "t")
    assert config.http_where.endswith("aioproc.toml:2")


@pytest.mark.parametrize("odd", [float("nan"), float("inf"), 0.0, -1.0])
@pytest.mark.parametrize("knob", ["header_timeout", "write_timeout"])
def test_serve_refuses_odd_timeouts(knob: str, odd: float) -> None:
    sup = Supervisor([Service("s", ["true"])])
    with pytest.raises(ValueError, match=rf"^{knob} must"):
        http.serve(sup, "127.0.0.1", 0, **{knob: odd})  # type: ignore[arg-type]

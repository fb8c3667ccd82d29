"""Supervisor.reconfigure (what a reload does), and wait() across restarts and stops."""

from __future__ import annotations

import asyncio

import pytest

from aioproc.supervisor import Reconfigured, Service, ServiceState, Supervisor

from .util import Recorder

pytestmark = pytest.mark.usefixtures("no_leaks")


def drop(name: str, line: str) -> None:
    """The output of every service here (one function: equal Services compare equal)."""


def svc(name: str, *args: str, **kw: object) -> Service:
    kw.setdefault("output", drop)
    return Service(name, ["sleep", "30", *args], **kw)  # type: ignore[arg-type]


async def test_reconfigure_adds_removes_restarts_and_keeps_the_unchanged() -> None:
    old = [svc("db"), svc("api", depends_on=["db"]), svc("gone"), svc("same")]
    async with Supervisor(old) as sup:
        rec = Recorder(sup)
        before = {n: (await asyncio.wait_for(sup.start(n), 10)).pid for n in sup.services}
        new = [
            svc("db", "changed"),  # changed: restarted
            svc("api", depends_on=["db"]),  # unchanged, though what it depends on restarts
            svc("same"),  # unchanged: a new but equal Service
            svc("new", depends_on=["db"]),  # added
        ]
        result = await asyncio.wait_for(sup.reconfigure(new), 10)
        assert result == Reconfigured(
            added=("new",), removed=("gone",), changed=("db",), unchanged=("api", "same")
        )
        assert list(sup.status()) == ["db", "api", "same", "new"]
        for name in ("db", "new"):
            status = await asyncio.wait_for(sup.start(name), 10)  # already launched: waits
            assert status.state is ServiceState.RUNNING
        now = sup.status()
        assert now["api"].pid == before["api"]
        assert now["same"].pid == before["same"]
        assert now["db"].pid != before["db"]
        assert sup.services["db"].argv == ["sleep", "30", "changed"]
        assert "gone" not in now
        with pytest.raises(KeyError):
            sup.logs(["gone"])
    await rec.close()
    # The new db started only after the old one had stopped.
    kinds = [(type(e).__name__, e.service) for e in rec.events]
    assert kinds.index(("Stopped", "db")) < kinds.index(("Starting", "db"), 2)


async def test_an_invalid_set_changes_nothing() -> None:
    async with Supervisor([svc("a"), svc("b")]) as sup:
        pids = {n: (await asyncio.wait_for(sup.start(n), 10)).pid for n in sup.services}
        bad_sets = [
            [svc("a"), svc("a")],  # duplicate
            [svc("a", depends_on=["zzz"])],  # unknown dependency
            [svc("a", depends_on=["b"]), svc("b", depends_on=["a"])],  # cycle
        ]
        for bad in bad_sets:
            with pytest.raises(ValueError, match=r"duplicate|unknown|cycle"):
                await sup.reconfigure(bad)
        with pytest.raises(TypeError):
            await sup.reconfigure(["not a service"])  # type: ignore[list-item]
        assert {n: s.pid for n, s in sup.status().items()} == pids


async def test_reconfigure_needs_a_running_supervisor() -> None:
    sup = Supervisor([svc("a")])
    with pytest.raises(RuntimeError, match="not running"):
        await sup.reconfigure([svc("a")])


async def test_wait_holds_across_a_reconfigure_a_restart_and_a_stop() -> None:
    async with Supervisor([svc("only")]) as sup:
        await asyncio.wait_for(sup.start("only"), 10)
        waiter = asyncio.ensure_future(sup.wait())
        # The only service changes: for a moment nothing runs, yet wait() holds on.
        await asyncio.wait_for(sup.reconfigure([svc("only", "x")]), 10)
        assert not waiter.done()
        await asyncio.wait_for(sup.restart("only"), 10)
        assert not waiter.done()
        await asyncio.wait_for(sup.stop("only"), 10)
        await asyncio.sleep(0)
        assert not waiter.done()  # stopped on request: parked until start() or shutdown
        await asyncio.wait_for(sup.start("only"), 10)
    outcome = await asyncio.wait_for(waiter, 10)
    assert outcome.ok


async def test_changed_services_stop_dependents_first_and_start_dependencies_first() -> None:
    old = [svc("db"), svc("api", depends_on=["db"]), svc("web", depends_on=["api"])]
    async with Supervisor(old) as sup:
        await asyncio.wait_for(sup.start("web"), 10)
        rec = Recorder(sup)
        new = [
            svc("db", "2"),
            svc("api", "2", depends_on=["db"]),
            svc("web", "2", depends_on=["api"]),
        ]
        result = await asyncio.wait_for(sup.reconfigure(new), 10)
        assert result.changed == ("db", "api", "web")
        await asyncio.wait_for(sup.start("web"), 10)
    await rec.close()
    order = [(type(e).__name__, e.service) for e in rec.events]
    stopped = [name for kind, name in order if kind == "Stopped"][:3]
    assert stopped == ["web", "api", "db"]
    ready = [name for kind, name in order if kind == "Ready"]
    assert ready[:3] == ["db", "api", "web"]
    # Nothing new started before everything old had stopped.
    assert max(order.index(("Stopped", n)) for n in ["db", "api", "web"]) < min(
        i for i, (kind, _) in enumerate(order) if kind == "Starting"
    )

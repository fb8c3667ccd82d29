"""Honest outcomes and dependency conditions: success_exit_codes in the Outcome, the
stop signal as a clean end, depends_on with started/ready/completed_successfully, and
the parent-death signal of services."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading

import pytest

import aioproc
from aioproc.supervisor import (
    Exited,
    Fatal,
    ReadyLine,
    Service,
    ServiceState,
    Starting,
    Supervisor,
)

from .util import Recorder

SLEEP = ["sh", "-c", "exec sleep 30"]


def quiet(name: str, argv: list[str] | str, **kw: object) -> Service:
    kw.setdefault("output", "inherit")
    return Service(name, argv, stable_after=0, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ outcomes


async def test_a_success_exit_code_is_a_successful_outcome() -> None:
    job = quiet("job", ["sh", "-c", "exit 3"], essential=True, success_exit_codes=[3])
    async with Supervisor([job]) as sup:
        outcome = await asyncio.wait_for(sup.wait(), 10)
    assert outcome.ok
    assert outcome.exit_code == 0
    assert sup.status()["job"].state is ServiceState.EXITED
    assert sup.status()["job"].last_clean is True


async def test_an_unlisted_exit_code_is_still_a_failure() -> None:
    job = quiet("job", ["sh", "-c", "exit 4"], essential=True, success_exit_codes=[3], restart="no")
    async with Supervisor([job]) as sup:
        outcome = await asyncio.wait_for(sup.wait(), 10)
    assert not outcome.ok
    assert outcome.exit_code == 4
    assert sup.status()["job"].last_clean is False


async def test_death_by_our_own_stop_signal_is_a_clean_end() -> None:
    # SIGUSR2 is no clean signal to systemd, but it is the one we sent.
    svc = quiet("svc", SLEEP, stop_signal=signal.SIGUSR2)
    async with Supervisor([svc]) as sup:
        await asyncio.wait_for(sup.start("svc"), 10)
        status = await sup.stop("svc")
    assert status.last_status is not None
    assert status.last_status.signal == signal.SIGUSR2
    assert status.last_clean is True


async def test_a_stop_that_needed_sigkill_is_not_clean() -> None:
    deaf = quiet(
        "deaf",
        ["sh", "-c", "trap '' TERM; echo up; while :; do sleep 0.05; done"],
        output=lambda name, line: None,
        ready=ReadyLine("up"),
        stop_timeout=0.2,
    )
    async with Supervisor([deaf]) as sup:
        await asyncio.wait_for(sup.start("deaf"), 10)
        status = await sup.stop("deaf")
    assert status.last_status is not None
    assert status.last_status.signal == signal.SIGKILL
    assert status.last_clean is False


# -------------------------------------------------------------- dependencies


def test_depends_on_takes_a_list_or_a_mapping_of_conditions() -> None:
    a = Service("a", SLEEP, depends_on=["db", "cache"])
    assert a.depends_on == ("db", "cache")
    assert a.dependency_conditions == {"db": "ready", "cache": "ready"}
    b = Service("b", SLEEP, depends_on={"migrate": "completed_successfully", "db": "started"})
    assert b.depends_on == ("migrate", "db")
    assert b.dependency_conditions == {"migrate": "completed_successfully", "db": "started"}
    assert Service("c", SLEEP, depends_on="db").dependency_conditions == {"db": "ready"}
    with pytest.raises(ValueError, match="condition must be one of started, ready"):
        Service("d", SLEEP, depends_on={"db": "healthy"})  # type: ignore[dict-item, unused-ignore]
    with pytest.raises(ValueError, match="depends on itself"):
        Service("e", SLEEP, depends_on={"e": "started"})


async def test_completed_successfully_waits_for_the_job_to_exit() -> None:
    # The job is ready at once (no readiness check), but its dependent waits for
    # its successful exit: it starts only after the job's Exited event.
    migrate = quiet("migrate", ["sh", "-c", "sleep 0.3; exit 3"], success_exit_codes=[3])
    web = quiet("web", SLEEP, depends_on={"migrate": "completed_successfully"})
    async with Supervisor([migrate, web]) as sup:
        rec = Recorder(sup)
        await rec.until(lambda e: isinstance(e, Starting) and e.service == "web")
        await rec.close()
        kinds = [(type(e).__name__, e.service) for e in rec.events]
        assert kinds.index(("Exited", "migrate")) < kinds.index(("Starting", "web"))
        assert sup.status()["web"].state is ServiceState.RUNNING


async def test_a_failed_job_keeps_its_dependents_from_starting_and_says_why() -> None:
    migrate = quiet("migrate", ["sh", "-c", "exit 1"], restart="no")
    web = quiet("web", SLEEP, depends_on={"migrate": "completed_successfully"})
    async with Supervisor([migrate, web]) as sup:
        rec = Recorder(sup)
        await asyncio.wait_for(sup.wait(), 10)
        await rec.close()
    status = sup.status()["web"]
    assert status.state is ServiceState.FATAL
    assert status.message == "dependency 'migrate' did not complete successfully (exit code 1)"
    assert not rec.of(Starting, "web")
    (fatal,) = rec.of(Fatal, "web")
    assert fatal.reason == status.message  # type: ignore[attr-defined]


async def test_started_does_not_wait_for_readiness() -> None:
    slow = quiet(
        "slow", SLEEP, ready=ReadyLine("never", timeout=30), output=lambda name, line: None
    )
    eager = quiet("eager", SLEEP, depends_on={"slow": "started"})
    patient = quiet("patient", SLEEP, depends_on={"slow": "ready"})
    async with Supervisor([slow, eager, patient]) as sup:
        rec = Recorder(sup)
        await rec.until(lambda e: isinstance(e, Starting) and e.service == "eager")
        await rec.close()
        statuses = sup.status()
        assert statuses["slow"].state is ServiceState.STARTING  # not ready
        assert statuses["eager"].state is ServiceState.RUNNING
        assert statuses["patient"].state is ServiceState.WAITING
        assert not rec.of(Starting, "patient")


async def test_ready_is_the_default_and_a_dependency_that_fails_first_is_fatal() -> None:
    broken = quiet(
        "broken",
        ["sh", "-c", "exit 2"],
        restart="no",
        ready=ReadyLine("x"),
        output=lambda name, line: None,
    )
    user = quiet("user", SLEEP, depends_on=["broken"])
    async with Supervisor([broken, user]) as sup:
        await asyncio.wait_for(sup.wait(), 10)
    status = sup.status()["user"]
    assert status.state is ServiceState.FATAL
    assert status.message == "dependency 'broken' exited before it was ready (exit code 2)"


# ----------------------------------------------------------------- pdeathsig


def test_pdeathsig_is_checked() -> None:
    assert Service("a", SLEEP).pdeathsig is None
    assert Service("a", SLEEP, pdeathsig=signal.SIGTERM).pdeathsig is signal.SIGTERM
    with pytest.raises(TypeError, match="pdeathsig must be a signal number"):
        Service("a", SLEEP, pdeathsig="TERM")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pdeathsig 999 is not a signal"):
        Service("a", SLEEP, pdeathsig=999)


_CATCHER = """
import os, signal, sys
signal.signal(signal.SIGUSR1, lambda *a: os.write(1, b"parent death\\n"))
os.write(1, b"up\\n")
while True:
    signal.pause()
"""


async def test_services_with_pdeathsig_survive_retiring_spawn_workers() -> None:
    # The kernel sends the parent-death signal when the *thread* that forked the
    # child exits. Services started together are a burst, which would otherwise go
    # to the spawn pool; retiring its workers must not signal them.
    before = aioproc.get_spawn_workers()
    aioproc.set_spawn_workers(4)
    lines: list[str] = []

    def keep(name: str, line: str) -> None:
        lines.append(line)

    services = [
        Service(
            f"s{i}",
            [sys.executable, "-c", _CATCHER],
            pdeathsig=signal.SIGUSR1,
            ready=ReadyLine("^up$"),
            output=keep,
        )
        for i in range(6)
    ]
    try:
        async with Supervisor(services) as sup:
            rec = Recorder(sup)
            for svc in services:
                await asyncio.wait_for(sup.start(svc.name), 20)
            workers = [t for t in threading.enumerate() if t.name == "aioproc-spawn"]
            aioproc.set_spawn_workers(0)
            for thread in workers:
                thread.join(10)
                assert not thread.is_alive()
            # A parent-death SIGUSR1 would print a line (read by the time a stop
            # has reaped the service and drained its pipe).
            for svc in services:
                await sup.stop(svc.name)
            await rec.close()
        assert "parent death" not in lines
        assert not [e for e in rec.events if isinstance(e, Exited) and e.reason != "stopped"]
    finally:
        aioproc.set_spawn_workers(before)


# ------------------------------------------------------------------ autostart


async def test_a_service_with_autostart_false_starts_only_when_asked() -> None:
    lazy = quiet("lazy", ["sh", "-c", "exit 0"], autostart=False, restart="no")
    job = quiet("job", ["sh", "-c", "exit 0"], restart="no")
    async with Supervisor([lazy, job]) as sup:
        rec = Recorder(sup)
        waiting = asyncio.ensure_future(sup.wait())
        await rec.until(lambda e: isinstance(e, Exited) and e.service == "job")
        for _ in range(5):
            await asyncio.sleep(0)  # what an ended job would set off, has
        assert sup.status()["lazy"].state is ServiceState.STOPPED
        assert sup.status()["lazy"].pid is None
        assert not rec.of(Starting, "lazy")
        # Never started is not ended: wait() waits for it, as for a stopped service.
        assert not waiting.done()
        await asyncio.wait_for(sup.start("lazy"), 10)
        exited = await rec.until(lambda e: isinstance(e, Exited) and e.service == "lazy")
        assert exited.status.exit_code == 0  # type: ignore[attr-defined]
        outcome = await asyncio.wait_for(waiting, 10)
    assert outcome.ok
    assert [e.service for e in rec.of(Starting)] == ["job", "lazy"]
    await rec.close()


async def test_autostart_false_is_pulled_in_by_a_service_that_needs_it() -> None:
    db = quiet("db", SLEEP, autostart=False)
    web = quiet("web", SLEEP, depends_on=["db"])
    spare = quiet("spare", SLEEP, autostart=False)
    async with Supervisor([db, web, spare]) as sup:
        assert (await asyncio.wait_for(sup.start("web"), 10)).state is ServiceState.RUNNING
        assert sup.status()["db"].state is ServiceState.RUNNING
        assert sup.status()["spare"].state is ServiceState.STOPPED


async def test_a_reload_starts_what_starts_on_its_own_or_was_running() -> None:
    on = quiet("on", SLEEP)
    off = quiet("off", SLEEP, autostart=False)
    manual = quiet("manual", SLEEP, autostart=False)
    async with Supervisor([on, off, manual]) as sup:
        await asyncio.wait_for(sup.start("manual"), 10)
        await asyncio.wait_for(sup.start("on"), 10)
        plan = await sup.reconfigure(
            [
                quiet("on", SLEEP, env={"V": "2"}),
                quiet("off", SLEEP, autostart=False, env={"V": "2"}),
                quiet("manual", SLEEP, autostart=False, env={"V": "2"}),
                quiet("new_off", SLEEP, autostart=False),
                quiet("new_on", SLEEP),
            ]
        )
        assert set(plan.changed) == {"on", "off", "manual"}
        assert set(plan.added) == {"new_off", "new_on"}
        for name in ("on", "manual", "new_on"):  # started on its own, or was running
            status = await asyncio.wait_for(sup.start(name), 10)
            assert status.state is ServiceState.RUNNING, name
        assert sup.status()["off"].state is ServiceState.STOPPED
        assert sup.status()["new_off"].state is ServiceState.STOPPED


def test_autostart_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="autostart must be True or False"):
        Service("x", ["true"], autostart="no")  # type: ignore[arg-type]

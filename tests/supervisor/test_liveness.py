"""Liveness probes (aioproc.supervisor._liveness) and the exec check, against real services."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import aioproc
from aioproc.supervisor import (
    Backoff,
    Exited,
    Liveness,
    Ready,
    ReadyExec,
    ReadyHTTP,
    ReadyLine,
    ReadyTCP,
    Service,
    ServiceState,
    Supervisor,
)
from aioproc.supervisor._liveness import watch_liveness
from aioproc.supervisor._readiness import ReadyContext

from ..helpers import process_state
from .util import Recorder, free_port, program

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]


def is_exit(name: str, reason: str | None = None) -> object:
    def pred(e: object) -> bool:
        return (
            isinstance(e, Exited) and e.service == name and (reason is None or e.reason == reason)
        )

    return pred


def dead(pid: int) -> bool:
    return process_state(pid) in (None, "Z")


# ------------------------------------------------------------------ HTTP
async def test_liveness_restarts_a_hung_http_service_only_after_failure_threshold() -> None:
    # /health answers the readiness check and the first probe, then hangs:
    # connections are accepted, requests never answered. Three failed probes
    # in a row (not one, not two) end the run; the policy restarts it.
    port = free_port()
    url = f"http://127.0.0.1:{port}/health"
    lines: list[str] = []
    svc = Service(
        "h",
        program("http_server", port, 0, 2),
        ready=ReadyHTTP(url, interval=0.02, timeout=10),
        liveness=Liveness(
            ReadyHTTP(url, body="status: ok"), period=0.1, timeout=1, failure_threshold=3
        ),
        backoff=Backoff(initial=0.01, jitter=0),
        output=lambda name, line: lines.append(line),
    )
    async with Supervisor([svc]) as sup:
        rec = Recorder(sup)
        exited = await rec.until(is_exit("h"), 20)
        assert exited.reason == "liveness"  # type: ignore[attr-defined]
        assert exited.will_restart  # type: ignore[attr-defined]
        assert lines.count("GET /health -> 200") == 2  # readiness, then one good probe
        assert lines.count("GET /health -> hang") == 3, lines
        error = exited.error  # type: ignore[attr-defined]
        assert error == f"liveness: GET {url}: no answer within 1 s (3 failures in a row)"
        assert sup.status()["h"].message == error
        # Restarted through the policy: ready again.
        await rec.until(lambda e: isinstance(e, Ready) and len(rec.of(Ready)) == 2, 20)
    await rec.close()


async def test_http_probe_body_must_match() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/health"
    svc = Service(
        "b",
        program("http_server", port, 0),
        ready=ReadyHTTP(url, interval=0.02, body=r"status: \w+"),
        liveness=Liveness(
            ReadyHTTP(url, body="status: great"), period=0.05, timeout=10, failure_threshold=1
        ),
        restart="no",
        output=lambda name, line: None,
    )
    async with Supervisor([svc]) as sup:
        rec = Recorder(sup)
        exited = await rec.until(is_exit("b"), 20)
        assert exited.error == (  # type: ignore[attr-defined]
            f"liveness: GET {url}: the body does not match 'status: great'"
        )
    await rec.close()


# ------------------------------------------------------------------ thresholds
@pytest.mark.parametrize(
    ("success_threshold", "calls"),
    [(1, 6), (2, 3)],  # F S F S F F: one success resets the count only with threshold 1
)
async def test_failure_and_success_thresholds(success_threshold: int, calls: int) -> None:
    script = iter([False, True, False, True, False, False])
    made = 0

    async def check(proc: aioproc.Process) -> None:
        nonlocal made
        made += 1
        if not next(script):
            raise RuntimeError(f"bad #{made}")

    lv = Liveness(check, period=0.001, failure_threshold=2, success_threshold=success_threshold)
    async with aioproc.spawn(["sleep", "30"]) as proc:
        reason = await asyncio.wait_for(watch_liveness(lv, ReadyContext(proc, None)), 10)
    assert made == calls
    assert reason == f"check() raised RuntimeError('bad #{calls}') (2 failures in a row)"


async def test_a_probe_that_does_not_return_in_time_fails() -> None:
    async def check(proc: aioproc.Process) -> None:
        await asyncio.sleep(30)

    lv = Liveness(check, timeout=0.05, failure_threshold=1)
    async with aioproc.spawn(["sleep", "30"]) as proc:
        reason = await asyncio.wait_for(watch_liveness(lv, ReadyContext(proc, None)), 10)
    assert reason == "check() did not return within 0.05 s"


# ------------------------------------------------------------------ exec
async def test_exec_readiness(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    svc = Service(
        "e",
        ["sh", "-c", f"sleep 0.2; touch {flag}; exec sleep 30"],
        ready=ReadyExec(["test", "-e", str(flag)], interval=0.02),
        output=lambda name, line: None,
    )
    async with Supervisor([svc]) as sup:
        status = await asyncio.wait_for(sup.start("e"), 10)
        assert status.state is ServiceState.RUNNING
        assert flag.exists()


async def test_exec_liveness_failing_says_why() -> None:
    svc = Service(
        "x",
        ["sleep", "30"],
        liveness=Liveness(
            ReadyExec(["sh", "-c", "echo 'no \x1b[31mdb'; exit 3"]),
            period=0.01,
            timeout=10,
            failure_threshold=2,
        ),
        restart="no",
        output=lambda name, line: None,
    )
    async with Supervisor([svc]) as sup:
        rec = Recorder(sup)
        exited = await rec.until(is_exit("x"), 20)
        assert exited.reason == "liveness"  # type: ignore[attr-defined]
        # The probe's output is untrusted: control characters are blanked.
        assert exited.error == (  # type: ignore[attr-defined]
            "liveness: exec sh: exited with code 3: no  [31mdb (2 failures in a row)"
        )
    await rec.close()


async def test_an_overrunning_exec_probe_is_stopped_and_counts_as_failed(tmp_path: Path) -> None:
    # Each attempt starts a background job and then hangs: the attempt is
    # stopped at its timeout, with its whole group, job included.
    pids, jobs = tmp_path / "pids", tmp_path / "jobs"
    probe = f"sleep 31 & echo $! >> {jobs}; echo $$ >> {pids}; trap '' TERM; wait"
    svc = Service(
        "o",
        ["sleep", "30"],
        liveness=Liveness(
            ReadyExec(["sh", "-c", probe], stop_timeout=0.2),
            period=0.05,
            timeout=0.3,
            failure_threshold=2,
        ),
        restart="no",
        output=lambda name, line: None,
    )
    async with Supervisor([svc]) as sup:
        rec = Recorder(sup)
        exited = await rec.until(is_exit("o"), 20)
        assert exited.error == (  # type: ignore[attr-defined]
            "liveness: exec sh: still running after 0.3 s (stopped) (2 failures in a row)"
        )
    await rec.close()
    started = [int(p) for p in pids.read_text().split()]
    left = [int(p) for p in jobs.read_text().split()]
    # Two attempts overran; on a loaded machine the second may be stopped
    # before its shell got as far as recording itself.
    assert 1 <= len(started) <= 2
    assert 1 <= len(left) <= 2
    for pid in started + left:
        assert dead(pid), f"process {pid} of a probe is still there"


# ------------------------------------------------------------------ arguments
def test_liveness_validates_its_arguments() -> None:
    with pytest.raises(TypeError, match="ReadyLine cannot be a liveness probe"):
        Liveness(ReadyLine("x"))
    with pytest.raises(ValueError, match="period must be positive"):
        Liveness(ReadyTCP("127.0.0.1", 1), period=0)
    with pytest.raises(ValueError, match="failure_threshold must be at least 1"):
        Liveness(ReadyTCP("127.0.0.1", 1), failure_threshold=0)
    with pytest.raises(TypeError, match="success_threshold must be an int"):
        Liveness(ReadyTCP("127.0.0.1", 1), success_threshold=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="service 'a': liveness: ReadyLine cannot"):
        Service("a", ["true"], liveness=ReadyLine("x"))
    with pytest.raises(TypeError, match="argv must be a list"):
        ReadyExec("pg_isready")  # type: ignore[arg-type]
    svc = Service("a", ["true"], liveness=ReadyTCP("127.0.0.1", 1))
    assert svc.liveness == Liveness(ReadyTCP("127.0.0.1", 1))
    assert os.path.basename(program("http_server")[1]) == "http_server.py"


@pytest.mark.parametrize("odd", [float("nan"), float("inf"), -1.0])
@pytest.mark.parametrize("knob", ["initial_delay", "period", "timeout"])
def test_liveness_refuses_nan_infinite_and_negative_times(knob: str, odd: float) -> None:
    # A NaN period would be a NaN sleep: a timer that breaks the loop's timer heap.
    with pytest.raises(ValueError, match=rf"^Liveness\.{knob} must"):
        Liveness(ReadyTCP("127.0.0.1", 1), **{knob: odd})  # type: ignore[arg-type]

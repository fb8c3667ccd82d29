"""The supervisor with real processes: restarts, ordering, tree stops, run-time control."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from aioproc import _cgroup, _procfs
from aioproc.supervisor import (
    BackingOff,
    Backoff,
    Exited,
    Fatal,
    Ready,
    ReadyLine,
    ReadyTCP,
    Service,
    ServiceState,
    Starting,
    StartLimit,
    Stopped,
    Stopping,
    Supervisor,
)

from ..helpers import (
    TIMER_SLACK,
    cancel_as_it_finishes,
    group_members,
    open_pidfds,
    process_state,
    run_python,
    wait_gone,
)
from .util import Recorder, free_port, program

pytestmark = pytest.mark.usefixtures("no_leaks")

SLEEP = ["sh", "-c", "exec sleep 30"]


def quiet(name: str, argv: list[str] | str, **kw: object) -> Service:
    """A service whose output is dropped (collected by a callback)."""
    kw.setdefault("output", lambda name, line: None)
    return Service(name, argv, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- restarts


async def test_crash_loop_backs_off_then_fatal_ends_supervisor() -> None:
    backoff = Backoff(initial=0.04, factor=3.0, max=0.4, jitter=0.1)
    crash = quiet(
        "crash",
        ["sh", "-c", "exit 3"],
        backoff=backoff,
        start_limit=StartLimit(burst=5, interval=30),
        essential=True,
    )
    bystander = quiet("bystander", SLEEP)
    async with Supervisor([crash, bystander]) as sup:
        rec = Recorder(sup)
        outcome = await asyncio.wait_for(sup.wait(), 10)
        bystander_pid = rec.of(Starting, "bystander")[0].pid  # type: ignore[attr-defined]
    await rec.close()

    starts = rec.of(Starting, "crash")
    exits = rec.of(Exited, "crash")
    assert len(starts) == 5  # burst=5: the sixth start is refused
    assert all(e.status is not None and e.status.exit_code == 3 for e in exits)  # type: ignore[attr-defined]
    delays = [e.delay for e in rec.of(BackingOff, "crash")]  # type: ignore[attr-defined]
    assert all(d <= backoff.max for d in delays)
    # The measured gaps, from each exit to the next start, grow until the cap.
    gaps = [s.time - e.time for e, s in zip(exits, starts[1:], strict=False)]
    assert len(gaps) == 4
    assert gaps[0] < gaps[1] < gaps[2], gaps
    assert all(g < backoff.max + 0.15 for g in gaps), gaps
    # Each delay is waited (less the timer's granularity: see TIMER_SLACK).
    assert all(g >= d - TIMER_SLACK for g, d in zip(gaps, delays, strict=False)), (gaps, delays)
    fatal = rec.of(Fatal, "crash")
    assert fatal
    assert "start limit" in fatal[0].reason
    # The essential failure ended everything, with the service's exit code.
    assert not outcome.ok
    assert outcome.service == "crash"
    assert outcome.exit_code == 3
    assert sup.status()["crash"].state is ServiceState.FATAL
    assert sup.status()["bystander"].state is ServiceState.STOPPED
    assert process_state(bystander_pid) is None


async def test_backoff_resets_after_a_stable_run() -> None:
    # Each run lasts ~0.1 s, longer than stable_after: every delay is the initial one.
    svc = quiet(
        "flaky",
        ["sh", "-c", "sleep 0.1; exit 1"],
        backoff=Backoff(initial=0.01, factor=10.0, max=5.0, jitter=0.0),
        stable_after=0.05,
        start_limit=StartLimit(burst=3, interval=30),
    )
    async with Supervisor([svc]) as sup:
        rec = Recorder(sup)
        await asyncio.wait_for(sup.wait(), 10)
    await rec.close()
    assert [e.delay for e in rec.of(BackingOff)] == [0.01, 0.01, 0.01]  # type: ignore[attr-defined]
    assert sup.status()["flaky"].restarts == 2


@pytest.mark.parametrize(
    ("restart", "script", "restarted"),
    [
        ("no", "exit 1", False),
        ("on-failure", "exit 0", False),
        ("on-failure", "exit 1", True),
        ("on-abnormal", "exit 1", False),
        ("on-abnormal", "kill -USR1 $$", True),
        ("on-abnormal", "kill -TERM $$", False),  # SIGTERM is a clean death, as in systemd
        ("always", "exit 0", True),
    ],
)
async def test_restart_policy(restart: str, script: str, restarted: bool) -> None:
    svc = quiet(
        "svc",
        ["sh", "-c", script],
        restart=restart,
        backoff=Backoff(initial=0.0),
        start_limit=StartLimit(burst=2, interval=30),
    )
    async with Supervisor([svc]) as sup:
        rec = Recorder(sup)
        await asyncio.wait_for(sup.wait(), 10)
    await rec.close()
    assert len(rec.of(Starting)) == (2 if restarted else 1)
    expected = ServiceState.FATAL if restarted else ServiceState.EXITED
    assert sup.status()["svc"].state is expected


async def test_spawn_failure_is_retried_then_fatal_with_127() -> None:
    svc = quiet(
        "ghost",
        ["/nonexistent/program"],
        backoff=Backoff(initial=0.0),
        start_limit=StartLimit(burst=2, interval=30),
        essential=True,
    )
    async with Supervisor([svc]) as sup:
        rec = Recorder(sup)
        outcome = await asyncio.wait_for(sup.wait(), 10)
    await rec.close()
    exits = rec.of(Exited)
    assert [e.reason for e in exits] == ["spawn-failed", "spawn-failed"]  # type: ignore[attr-defined]
    assert "nonexistent" in (exits[0].error or "")  # type: ignore[attr-defined]
    assert outcome.exit_code == 127


async def test_essential_clean_exit_stops_everything_with_code_0() -> None:
    job = quiet("job", ["true"], restart="no", essential=True)
    other = quiet("other", SLEEP)
    async with Supervisor([job, other]) as sup:
        outcome = await asyncio.wait_for(sup.wait(), 10)
    assert outcome.ok
    assert outcome.exit_code == 0
    assert outcome.service == "job"
    assert sup.status()["other"].state is ServiceState.STOPPED


# -------------------------------------------------------- readiness and ordering


async def test_dependent_starts_only_after_tcp_ready() -> None:
    port = free_port()
    # "db" takes 0.3 s before it listens; "web" must not start before.
    db = quiet("db", program("tcp_server", port, 0.3), ready=ReadyTCP("127.0.0.1", port))
    web = quiet("web", SLEEP, depends_on=["db"])
    async with Supervisor([web, db]) as sup:
        rec = Recorder(sup)
        started = await rec.until(lambda e: isinstance(e, Starting) and e.service == "web")
        # At the moment web starts, db accepts connections.
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
        names = [(type(e).__name__, e.service) for e in rec.events]
        assert names.index(("Ready", "db")) < names.index(("Starting", "web"))
        db_start = rec.of(Starting, "db")[0]
        assert started.time - db_start.time >= 0.3
        assert sup.status()["web"].state is ServiceState.RUNNING
    await rec.close()
    # Stopped in reverse order: web before db.
    stopped = [e.service for e in rec.of(Stopped)]
    assert stopped == ["web", "db"]


async def test_shutdown_in_reverse_dependency_order() -> None:
    a = quiet("a", SLEEP)
    b = quiet("b", SLEEP, depends_on=["a"])
    c = quiet("c", SLEEP, depends_on=["b"])
    d = quiet("d", SLEEP, depends_on=["a"])
    async with Supervisor([c, a, d, b]) as sup:
        rec = Recorder(sup)
        for name in "abcd":
            await sup.start(name)  # already starting: waits until ready
        starts = [e.service for e in rec.of(Ready)] if rec.events else []
        assert starts == [] or starts.index("a") < starts.index("b")
    await rec.close()
    order = [e.service for e in rec.of(Stopped)]
    assert order.index("c") < order.index("b") < order.index("a")
    assert order.index("d") < order.index("a")


async def test_dependency_failure_makes_dependents_fatal() -> None:
    broken = quiet("broken", ["sh", "-c", "exit 1"], restart="no", ready=ReadyLine("never"))
    user = quiet("user", SLEEP, depends_on=["broken"])
    async with Supervisor([broken, user]) as sup:
        await asyncio.wait_for(sup.wait(), 10)
        assert sup.status()["user"].state is ServiceState.FATAL
        assert "broken" in (sup.status()["user"].message or "")


async def test_one_shot_dependency_satisfies_dependents() -> None:
    migrate = quiet("migrate", ["true"], restart="no")
    web = quiet("web", SLEEP, depends_on=["migrate"])
    async with Supervisor([migrate, web]) as sup:
        status = await asyncio.wait_for(sup.start("web"), 10)
        assert status.state is ServiceState.RUNNING


def test_cycle_and_unknown_dependency_are_errors_at_construction() -> None:
    a = Service("a", SLEEP, depends_on=["c"])
    b = Service("b", SLEEP, depends_on=["a"])
    c = Service("c", SLEEP, depends_on=["b"])
    with pytest.raises(ValueError, match=r"dependency cycle: a -> c -> b -> a"):
        Supervisor([a, b, c])
    with pytest.raises(ValueError, match="unknown service 'zz'"):
        Supervisor([Service("x", SLEEP, depends_on=["zz"])])
    with pytest.raises(ValueError, match="duplicate"):
        Supervisor([Service("x", SLEEP), Service("x", SLEEP)])


# ------------------------------------------------------------------ tree stop


@pytest.fixture(params=["pidfd", "poll"])
def group_wait(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run with pidfds, and with the polling fallback (pidfd_open refused)."""
    _procfs.use_pidfd = request.param == "pidfd"
    try:
        yield request.param
    finally:
        _procfs.use_pidfd = True


async def test_stop_leaves_no_process_of_the_tree(group_wait: str) -> None:
    lines: list[str] = []
    svc = Service(
        "tree",
        program("forker"),
        ready=ReadyLine(r"^pids "),
        stop_timeout=0.3,
        output=lambda name, line: lines.append(line),
    )
    async with Supervisor([svc]) as sup:
        status = await asyncio.wait_for(sup.start("tree"), 10)
        assert status.state is ServiceState.RUNNING
        assert status.pid is not None
        pgid = status.pid
        pids = {int(p) for p in lines[-1].split()[1:]}
        assert len(pids) == 4
        assert pids <= group_members(pgid)
        fds = open_pidfds(pids | {pgid})
        t0 = time.monotonic()
        after = await sup.stop("tree")
        took = time.monotonic() - t0
        # Done means done: the group is empty the moment stop() returns.
        assert group_members(pgid) == set()
        assert wait_gone(fds, timeout=1.0)  # all have exited: returns at once
        assert after.state is ServiceState.STOPPED
        assert after.last_status is not None
        assert after.last_status.signal == signal.SIGTERM
        # The members deaf to SIGTERM got their stop_timeout, then SIGKILL.
        assert 0.3 <= took < 2.0


async def test_leader_exit_cleans_up_what_it_left_in_its_group() -> None:
    lines: list[str] = []
    svc = Service(
        "leaver",
        program("forker", "exit"),
        restart="no",
        stop_timeout=0.2,
        output=lambda name, line: lines.append(line),
    )
    async with Supervisor([svc]) as sup:
        rec = Recorder(sup)
        await asyncio.wait_for(sup.wait(), 10)
        exited = rec.of(Exited)[0]
        assert exited.status is not None
        assert exited.status.exit_code == 0
    await rec.close()
    pids = {int(p) for p in lines[-1].split()[1:]}
    assert all(process_state(p) in (None, "Z") for p in pids)
    assert group_members(exited.pid) == set()  # type: ignore[attr-defined, arg-type]


async def test_stop_without_kill_group() -> None:
    svc = quiet("solo", ["sleep", "30"], kill_group=False)
    async with Supervisor([svc]) as sup:
        pid = (await sup.start("solo")).pid
        assert pid is not None
        assert os.getpgid(pid) == os.getpgid(0)
        after = await sup.stop("solo")
        assert after.last_status is not None
        assert after.last_status.signal == signal.SIGTERM


async def test_shutdown_timeout_bounds_the_shutdown() -> None:
    deaf = quiet("deaf", ["sh", "-c", "trap '' TERM; echo up; while :; do sleep 1; done"])
    svc = Service(
        "deaf",
        deaf.argv,
        stop_timeout=30,
        ready=ReadyLine("up"),
        output=lambda name, line: None,
    )
    sup = Supervisor([svc], shutdown_timeout=0.3)
    async with sup:
        pid = (await sup.start("deaf")).pid
    # Left the block: everything is gone, well before the service's stop_timeout.
    assert pid is not None
    assert group_members(pid) == set()
    assert sup.status()["deaf"].last_status.signal == signal.SIGKILL  # type: ignore[union-attr]


async def test_cancelling_the_owner_kills_the_services() -> None:
    started = asyncio.Event()
    pids: list[int] = []

    async def owner() -> None:
        async with Supervisor([quiet("s", SLEEP, stop_timeout=0.5)]) as sup:
            pids.append((await sup.start("s")).pid or 0)
            started.set()
            await sup.wait()

    task = asyncio.ensure_future(owner())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert group_members(pids[0]) == set()


async def test_aclose_reraises_a_cancellation_that_arrives_as_the_shutdown_ends() -> None:
    sup = Supervisor([quiet("s", SLEEP, stop_timeout=5)])
    await sup.__aenter__()
    pid = (await sup.start("s")).pid
    returned = []

    async def close() -> None:
        await sup.aclose()
        returned.append(True)

    task = asyncio.ensure_future(close())
    await cancel_as_it_finishes(task, "_await_task")
    with pytest.raises(asyncio.CancelledError):
        await task
    assert returned == []
    assert pid is not None
    assert group_members(pid) == set()


# ------------------------------------------------------------- run-time control


async def test_add_start_stop_restart_remove_and_status() -> None:
    async with Supervisor([]) as sup:
        rec = Recorder(sup)
        sup.add(quiet("late", SLEEP))
        first = await sup.start("late")
        assert first.state is ServiceState.RUNNING
        assert first.uptime is not None
        again = await sup.restart("late")
        assert again.pid != first.pid
        assert again.state is ServiceState.RUNNING
        assert again.restarts == 0  # a manual restart is a new start, not a restart
        sup.add(quiet("user", SLEEP, depends_on=["late"]))
        with pytest.raises(ValueError, match="depend on it"):
            await sup.remove("late")
        await sup.remove("user")
        stopped = await sup.stop("late")
        assert stopped.state is ServiceState.STOPPED
        assert stopped.pid is None
        await sup.remove("late")
        assert sup.status() == {}
        with pytest.raises(KeyError):
            await sup.start("late")
    await rec.close()
    kinds = [type(e).__name__ for e in rec.events if e.service == "late"]
    assert kinds[:2] == ["Starting", "Ready"]
    assert "Stopping" in kinds
    assert kinds.count("Stopped") >= 2
    assert all(isinstance(e, Stopping) for e in rec.events if type(e).__name__ == "Stopping")


async def test_wait_returns_when_all_services_ended() -> None:
    async with Supervisor([quiet("a", ["true"]), quiet("b", ["true"])]) as sup:
        outcome = await asyncio.wait_for(sup.wait(), 10)
        assert outcome.ok
        assert {s.state for s in sup.status().values()} == {ServiceState.EXITED}


async def test_prefixed_output_lines_are_whole_and_aligned() -> None:
    out = io.StringIO()
    script = "printf 'one\\ntw'; sleep 0.05; printf 'o\\nthree'"
    services = [
        Service("a", ["sh", "-c", script], restart="no"),
        Service("longer", ["sh", "-c", "echo hi >&2"], restart="no"),
    ]
    async with Supervisor(services, output_stream=out, color=False) as sup:
        await asyncio.wait_for(sup.wait(), 10)
    lines = out.getvalue().splitlines()
    assert sorted(lines) == sorted(
        ["a      | one", "a      | two", "a      | three", "longer | hi"]
    )


async def test_prefixed_output_in_colour() -> None:
    out = io.StringIO()
    async with Supervisor(
        [Service("a", ["echo", "x"], restart="no")], output_stream=out, color=True
    ) as sup:
        await asyncio.wait_for(sup.wait(), 10)
    assert out.getvalue() == "\x1b[36ma |\x1b[0m x\n"


async def test_output_to_a_file(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "log.txt")
    with open(path, "w") as f:
        f.write("before\n")
    async with Supervisor([Service("w", ["sh", "-c", "echo a; echo b >&2"], output=path)]) as sup:
        await asyncio.wait_for(sup.wait(), 10)
    with open(path) as f:
        assert f.read() == "before\na\nb\n"


# ------------------------------------------------------------------ limits
async def test_service_rlimits_reach_the_program() -> None:
    out = io.StringIO()
    svc = Service(
        "lim", ["sh", "-c", "ulimit -n; ulimit -c"], restart="no", rlimits={"nofile": 77, "core": 0}
    )
    async with Supervisor([svc], output_stream=out, color=False) as sup:
        await asyncio.wait_for(sup.wait(), 10)
    assert out.getvalue().splitlines() == ["lim | 77", "lim | 0"]


def test_service_rlimits_are_checked_at_construction() -> None:
    with pytest.raises(ValueError, match=r"service 'x': rlimits: unknown limit 'nofiles'"):
        Service("x", SLEEP, rlimits={"nofiles": 1})
    with pytest.raises(ValueError, match=r"service 'x': rlimits\['core'\]: -1 is negative"):
        Service("x", SLEEP, rlimits={"core": -1})


# ------------------------------------------------------------------ cgroups
_CG_ROOT, _CG_WHY = _cgroup.cgroup_root()


@pytest.mark.skipif(_CG_ROOT is None, reason=f"no writable cgroup v2: {_CG_WHY}")
async def test_a_service_in_a_cgroup_lists_its_members_and_is_stopped_whole() -> None:
    # A daemon that leaves its process group (setsid, then a double fork),
    # deaf to SIGTERM: only the cgroup still holds it.
    script = "setsid sh -c 'trap \"\" TERM; sleep 55 & echo $!; echo $$; echo up; wait' & wait"
    lines: list[str] = []
    svc = Service(
        "d",
        ["sh", "-c", script],
        cgroup=True,
        stop_timeout=0.3,
        ready=ReadyLine("^up$"),
        output=lambda name, line: lines.append(line),
    )
    async with Supervisor([svc]) as sup:
        status = await asyncio.wait_for(sup.start("d"), 10)
        assert status.state is ServiceState.RUNNING
        daemon = {int(p) for p in lines[:2]}
        assert status.pid is not None
        assert daemon | {status.pid} <= set(status.members)
        assert not daemon & group_members(status.pid)  # out of the group
        fds = open_pidfds(daemon)
        after = await sup.stop("d")
        assert after.members == ()
        assert wait_gone(fds, timeout=1.0)  # gone when stop() returned
    assert not [d for d in os.listdir(_CG_ROOT) if d.startswith(f"aioproc-{os.getpid()}-")]


def test_runs_in_a_loop_outside_the_main_thread() -> None:
    # No signal handler, no main-thread requirement: a web app's worker thread will do.
    import threading

    results: list[object] = []

    async def work() -> None:
        async with Supervisor([quiet("t", SLEEP, stop_timeout=1)]) as sup:
            results.append((await sup.start("t")).state)
        results.append(sup.status()["t"].state)

    def thread_main() -> None:
        try:
            asyncio.run(work())
        except BaseException as exc:  # pragma: no cover - reported below
            results.append(exc)

    thread = threading.Thread(target=thread_main)
    thread.start()
    thread.join(20)
    assert results == [ServiceState.RUNNING, ServiceState.STOPPED]


@pytest.mark.parametrize("odd", [float("nan"), float("inf")])
def test_nan_and_infinite_times_are_refused(odd: float) -> None:
    with pytest.raises(ValueError, match=r"^stop_timeout must be a"):
        Service("s", ["true"], stop_timeout=odd)
    with pytest.raises(ValueError, match=r"^shutdown_timeout must be a"):
        Supervisor(shutdown_timeout=odd)
    if odd != odd:
        with pytest.raises(ValueError, match=r"^stable_after must be a number of seconds, not NaN"):
            Service("s", ["true"], stable_after=odd)
    else:  # only compared, never waited for: a run is never stable enough
        assert Service("s", ["true"], stable_after=odd).stable_after == odd


_BIG_GROUP_STOP = """
    import asyncio, resource, sys, uvloop
    from aioproc.supervisor import (
        Backoff, Exited, Fatal, ReadyLine, Service, StartLimit, Stopped, Supervisor,
    )
    MEMBERS = 400  # more than the descriptors left under the limit below
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    # The members ignore SIGTERM (inherited), the leader does not: stopping the
    # group waits for the members until stop_timeout, then SIGKILLs them.
    script = (
        "trap '' TERM; i=0; while [ $i -lt %d ]; do sleep 30 & i=$((i+1)); done; "
        "trap - TERM; echo ready; wait" % MEMBERS
    )
    quiet = dict(output=lambda name, line: None)
    big = Service("big", ["sh", "-c", script], ready=ReadyLine("ready"), stop_timeout=2, **quiet)
    # An unrelated service that restarts all the time: each start needs descriptors.
    other = Service(
        "other", ["true"], restart="always", backoff=Backoff(initial=0.01, max=0.01),
        start_limit=StartLimit(burst=10_000, interval=1), **quiet,
    )

    async def main():
        async with Supervisor([big, other]) as sup:
            events = sup.events()
            await sup.start("big")
            stopping = asyncio.ensure_future(sup.stop("big"))
            bad = []
            async for event in events:
                if event.service == "other" and (
                    isinstance(event, Fatal)
                    or isinstance(event, Exited) and event.reason == "spawn-failed"
                ):
                    bad.append(event)
                if event.service == "big" and isinstance(event, Stopped):
                    break
            await stopping
            print("bad", bad, sup.status()["other"].state.value, flush=True)

    (uvloop.run if sys.argv[1] == "uvloop" else asyncio.run)(main())
"""


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_stopping_a_group_larger_than_the_descriptor_limit_starves_nobody(loop_name: str) -> None:
    # Waiting for the members of a stopped group holds a bounded number of
    # pidfds (it held one per member: EMFILE for everything else, and an
    # unrelated service's restarts failed until it went FATAL).
    res = run_python(_BIG_GROUP_STOP, loop_name, timeout=60)
    assert res.returncode == 0, res.stderr
    bad, state = res.stdout.splitlines()[-1].rsplit(" ", 1)
    assert bad == "bad []", res.stdout
    assert state != "fatal"

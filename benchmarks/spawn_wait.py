"""Spawn and wait, side by side: aioproc against the floor and its peers.

Every peer runs the same five measurements in a fresh interpreter of its own
(this script re-run with ``--child NAME``), so thread counts and RSS are its own:

(a) ``seq``: spawn ``/bin/true`` and wait for it, one after the other; rate (the
    median of five batches).
(b) ``conc``: spawn 256 ``sleep 1``, then wait for all; wall time, and the
    threads and RSS the parent gained while they ran.
(c) ``lat``: time from a child's exit to ``wait()`` returning, p50/p99. The child
    is ``exit_stamp`` (``/work/shared/bench/exit_stamp.c``, compiled here with
    gcc into a temporary directory): it writes CLOCK_MONOTONIC ns to a file
    just before exiting; the parent reads the clock when ``wait()`` returns.
(d) ``stall``: 200 ``sleep 1`` spawned concurrently (one gather) while a task
    ticks every 1 ms; the longest tick gap beyond 1 ms is the loop stall.
(e) ``storm``: 1,000 ``/bin/true`` spawned and awaited concurrently, the ticker
    running; spawns/s and the longest stall. The sync peers spawn all, then
    wait all.

Peers are interleaved: each round runs every peer once, in a shuffled order,
and the tables show the median over rounds. Ratios (``x raw``, ``x popen``) are
taken within each round, then the median is shown, so drift on a shared
machine cancels out as far as it can.

    python benchmarks/spawn_wait.py                  # full run, ~3-5 min on 2 cores
    python benchmarks/spawn_wait.py --quick          # small N, one round (smoke test)
    python benchmarks/spawn_wait.py --markdown       # tables as markdown, for docs
    python benchmarks/spawn_wait.py --only 'raw,aioproc*' --json out.json
    python benchmarks/spawn_wait.py --chart ratios.png   # needs the [bench] extra

Nothing here is asserted by the test suite; ``tests/test_benchmarks_smoke.py``
only checks that ``--quick`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import fnmatch
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

TRUE = "/bin/true"
SLEEP = "/bin/sleep"
TICK = 0.001  # the stall ticker's period, seconds

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# exit_stamp.c lives in the shared bench folder, beside the checkout (CI) or in /work/shared.
STAMP_SOURCES = (
    os.environ.get("AIOPROC_EXIT_STAMP_SRC", ""),
    str(REPO.parent / "shared" / "bench" / "exit_stamp.c"),
    "/work/shared/bench/exit_stamp.c",
)


# ------------------------------------------------------------------- the peers
@dataclasses.dataclass(frozen=True)
class Peer:
    name: str
    api: str  # "raw", "popen", "floor", "floor-pool", "asyncio" or "aioproc"
    loop: str | None  # "asyncio" or "uvloop"; None for the synchronous peers
    mode: str | None  # aioproc's wait mode
    what: str
    workers: int | None = None  # aioproc's spawn pool size; None: --spawn-workers or default


PEERS = (
    Peer("raw", "raw", None, None, "os.posix_spawn + os.waitpid (the floor)"),
    Peer("popen", "popen", None, None, "subprocess.Popen + Popen.wait()"),
    Peer(
        "floor",
        "floor",
        "asyncio",
        None,
        "the least a library can do on the default loop: posix_spawn, pidfd_open, "
        "add_reader, os.waitid; no checks, no safety, spawns inline",
    ),
    Peer("floor-uvloop", "floor", "uvloop", None, "the same on uvloop"),
    Peer(
        "floor-pool",
        "floor-pool",
        "asyncio",
        None,
        "the floor with the fork/exec in a pool of threads (as many as aioproc's pool): "
        "_posixsubprocess.fork_exec (vfork, GIL released), one wake-up per batch of "
        "outcomes; the storm's floor for a library that keeps its loop free",
    ),
    Peer("floor-pool-uvloop", "floor-pool", "uvloop", None, "the same on uvloop"),
    Peer("asyncio", "asyncio", "asyncio", None, "asyncio.create_subprocess_exec, default loop"),
    Peer("uvloop", "asyncio", "uvloop", None, "asyncio.create_subprocess_exec on uvloop"),
    Peer("aioproc", "aioproc", "asyncio", "pidfd", "aioproc.spawn, pidfd mode, default loop"),
    Peer("aioproc-uvloop", "aioproc", "uvloop", "pidfd", "aioproc.spawn, pidfd mode, uvloop"),
    Peer(
        "aioproc-inline",
        "aioproc",
        "asyncio",
        "pidfd",
        "aioproc.spawn, pidfd mode, default loop, spawn pool off (0 workers)",
        workers=0,
    ),
    Peer("aioproc-pid", "aioproc", "asyncio", "pid", "aioproc.spawn, pid mode, default loop"),
    Peer("aioproc-pid-uvloop", "aioproc", "uvloop", "pid", "aioproc.spawn, pid mode, uvloop"),
)
PEER_BY_NAME = {p.name: p for p in PEERS}
# The rows the targets are stated for (pidfd mode, both loops).
TARGET_PEERS = ("aioproc", "aioproc-uvloop")


@dataclasses.dataclass
class Params:
    seq: int = 500
    conc: int = 256
    sleep_s: float = 1.0
    lat: int = 200
    stall: int = 200
    storm: int = 1000
    warmup: int = 10
    idle_s: float = 0.2  # the ticker runs idle this long first: the stall floor
    stamp: str | None = None  # path of the compiled exit_stamp; None skips (c)
    spawn_workers: int | None = None


QUICK = Params(seq=20, conc=16, sleep_s=0.2, lat=10, stall=16, storm=40, idle_s=0.05)


# ------------------------------------------------------------- /proc helpers
def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def read_stamp(path: str) -> int:
    with open(path) as f:
        return int(f.read().strip())


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def batches(total: int, parts: int = 5) -> list[int]:
    """Split ``total`` into up to ``parts`` batches; a rate is the median batch's."""
    parts = max(1, min(parts, total))
    return [total // parts + (i < total % parts) for i in range(parts)]


class Threads:
    """Samples the thread count; reports the peak above the baseline.

    :meth:`sample` reads ``/proc/self/task`` (every thread, native ones too).
    :meth:`sample_cheap` is for the 1 ms ticker: it counts Python threads
    (``threading.active_count()``, plus the native threads seen at the baseline)
    without a system call, because a call that releases the GIL on the loop
    thread can cost it up to a switch interval (5 ms) to get the GIL back
    while worker threads run, and the ticker would then measure itself.
    """

    def __init__(self) -> None:
        self.base = thread_count()
        self.native = self.base - threading.active_count()
        self.peak = self.base

    def sample(self) -> int:
        n = thread_count()
        self.peak = max(self.peak, n)
        return n

    def sample_cheap(self) -> None:
        self.peak = max(self.peak, threading.active_count() + self.native)

    @property
    def peak_delta(self) -> int:
        return self.peak - self.base


# ------------------------------------------------------------ synchronous peers
def run_sync(peer: Peer, p: Params) -> dict[str, Any]:
    popen = peer.api == "popen"

    def spawn(argv: list[str]) -> Any:
        if popen:
            return subprocess.Popen(argv)
        return os.posix_spawn(argv[0], argv, os.environ)

    def wait(h: Any) -> int:
        if popen:
            return int(h.wait())
        return os.waitstatus_to_exitcode(os.waitpid(h, 0)[1])

    threads = Threads()
    out: dict[str, Any] = {}
    for _ in range(p.warmup):
        wait(spawn([TRUE]))

    rates = []
    for n in batches(p.seq):
        t0 = time.perf_counter()
        for _ in range(n):
            assert wait(spawn([TRUE])) == 0
        rates.append(n / (time.perf_counter() - t0))
    out["seq_per_s"] = statistics.median(rates)

    if p.stamp:
        lats = []
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "stamp")
            for _ in range(p.lat):
                wait(spawn([p.stamp, path]))
                now = time.monotonic_ns()
                lats.append((now - read_stamp(path)) / 1e3)
        out["lat_p50_us"] = percentile(lats, 50)
        out["lat_p99_us"] = percentile(lats, 99)

    th0, rss0 = threads.sample(), rss_kib()
    t0 = time.perf_counter()
    hs = [spawn([SLEEP, str(p.sleep_s)]) for _ in range(p.conc)]
    out["conc_spawn_s"] = time.perf_counter() - t0
    out["conc_threads"] = threads.sample() - th0
    out["conc_rss_kib"] = rss_kib() - rss0
    for h in hs:
        wait(h)
    out["conc_total_s"] = time.perf_counter() - t0

    # (d) has no loop to stall; the whole spawn loop would block one.
    t0 = time.perf_counter()
    hs = [spawn([SLEEP, str(p.sleep_s)]) for _ in range(p.stall)]
    out["stall_spawn_s"] = time.perf_counter() - t0
    for h in hs:
        wait(h)

    t0 = time.perf_counter()
    hs = [spawn([TRUE]) for _ in range(p.storm)]
    threads.sample()
    codes = [wait(h) for h in hs]
    out["storm_per_s"] = p.storm / (time.perf_counter() - t0)
    assert all(c == 0 for c in codes)
    out["threads_max"] = threads.peak_delta
    return out


# ----------------------------------------------------------------- async peers
Spawn = Callable[[list[str]], Awaitable[Any]]
Wait = Callable[[Any], Awaitable[int]]


def configure_spawn_workers(workers: int | None) -> int | None:
    """Set aioproc's spawn worker pool size (None: leave the default); return the size.

    The pool runs the fork/exec step off the loop thread for bursts of spawns
    (``aioproc.set_spawn_workers(n)``, ``0`` = always inline). An aioproc
    without that setting runs every spawn inline: None is returned then, and
    ``--spawn-workers`` is ignored with a note.
    """
    import aioproc

    setter = getattr(aioproc, "set_spawn_workers", None)
    getter = getattr(aioproc, "get_spawn_workers", None)
    if setter is None:
        if workers is not None:
            print("# --spawn-workers: this aioproc has no set_spawn_workers()", file=sys.stderr)
        return None
    if workers is not None:
        setter(workers)
    return None if getter is None else int(getter())


def floor_ops() -> tuple[Spawn, Wait]:
    """The floor of a loop: what any thread-free library on it must at least do.

    Spawn with ``posix_spawn`` (inline), watch the pidfd with ``add_reader``,
    reap with ``os.waitid``, wake the waiter through a future. Nothing is
    checked and nothing is safe (no fork lock, no rusage, no cleanup on
    cancellation): its latency and sequential rate are what the loop itself
    allows, so aioproc's ``x floor`` is its own cost on that loop.
    """
    loop = asyncio.get_running_loop()

    async def spawn(argv: list[str]) -> int:
        # Inline on purpose: the floor pays no thread hand-off.
        return os.pidfd_open(os.posix_spawn(argv[0], argv, os.environ))  # noqa: ASYNC221

    async def wait(fd: int) -> int:
        fut: asyncio.Future[int] = loop.create_future()

        def ready() -> None:
            try:
                res = os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG)
            except BlockingIOError:  # uvloop's non-blocking pidfd, not exited yet
                return
            if res is None:
                return
            loop.remove_reader(fd)
            os.close(fd)
            exited = res.si_code == os.CLD_EXITED
            fut.set_result(res.si_status if exited else -res.si_status)

        loop.add_reader(fd, ready)
        return await fut

    return spawn, wait


def _fork_exec(args: list[bytes], err_read: int, err_write: int) -> int:
    """``_posixsubprocess.fork_exec`` with nothing but close_fds, in this Python's signature."""
    import _posixsubprocess

    fork_exec: Any = _posixsubprocess.fork_exec  # the stubs know one signature only
    common: tuple[Any, ...] = (args, args[:1], True, (err_write,), None, None, -1, -1, -1, -1)
    common += (-1, -1, err_read, err_write, True, False)  # ... restore_signals, call_setsid
    if sys.version_info >= (3, 11):  # process_group ... allow_vfork
        return int(fork_exec(*common, -1, None, None, None, -1, None, True))
    return int(fork_exec(*common, None, None, None, -1, None))  # gid ... preexec_fn


def floor_pool_ops(p: Params, meta: dict[str, Any]) -> tuple[Spawn, Wait]:
    """The storm's floor for a library that forks off the loop, as aioproc's pool does.

    As many threads as aioproc's default pool run ``_posixsubprocess.fork_exec``
    (vfork; the GIL is released around it on 3.11+), read the error pipe and
    open the pidfd; outcomes reach the loop in batches, one
    ``call_soon_threadsafe`` per batch. Waiting is :func:`floor_ops`'s. No checks
    and no safety (no fork lock, no signal mask, no cleanup on cancellation):
    its storm rate is what a thread-free-waiting library with a pool can reach
    on this loop and machine.
    """
    import queue

    loop = asyncio.get_running_loop()
    workers = p.spawn_workers or min(4, os.cpu_count() or 1)
    meta["spawn_workers"] = workers
    jobs: queue.SimpleQueue[tuple[asyncio.Future[int], list[str]]] = queue.SimpleQueue()
    done: list[tuple[asyncio.Future[int], int]] = []
    lock = threading.Lock()

    def deliver() -> None:
        with lock:
            items = done[:]
            done.clear()
        for fut, fd in items:
            fut.set_result(fd)

    def work() -> None:
        while True:
            fut, argv = jobs.get()
            args = [os.fsencode(a) for a in argv]
            err_read, err_write = os.pipe2(os.O_CLOEXEC)
            try:
                pid = _fork_exec(args, err_read, err_write)
            finally:
                os.close(err_write)
            if os.read(err_read, 1000):  # pragma: no cover - /bin/true always execs
                raise SystemExit(f"exec failed: {argv}")
            os.close(err_read)
            fd = os.pidfd_open(pid)
            with lock:
                done.append((fut, fd))
                wake = len(done) == 1
            if wake:
                loop.call_soon_threadsafe(deliver)

    for _ in range(workers):
        threading.Thread(target=work, name="floor-pool", daemon=True).start()
    _, wait = floor_ops()

    async def spawn(argv: list[str]) -> int:
        fut: asyncio.Future[int] = loop.create_future()
        jobs.put((fut, argv))
        return await fut

    return spawn, wait


def make_ops(peer: Peer, p: Params, meta: dict[str, Any]) -> tuple[Spawn, Wait]:
    if peer.api == "floor":
        return floor_ops()
    if peer.api == "floor-pool":
        return floor_pool_ops(p, meta)
    if peer.api == "asyncio":

        async def spawn(argv: list[str]) -> Any:
            return await asyncio.create_subprocess_exec(*argv)

        async def wait(proc: Any) -> int:
            return int(await proc.wait())

        return spawn, wait

    import aioproc

    assert peer.mode is not None
    aioproc.set_wait_mode(peer.mode)  # type: ignore[arg-type]
    workers = p.spawn_workers if peer.workers is None else peer.workers
    meta["spawn_workers"] = configure_spawn_workers(workers)

    async def aspawn(argv: list[str]) -> Any:
        return await aioproc.spawn(argv)

    async def await_(proc: Any) -> int:
        status = await proc.wait()
        return int(status.returncode)

    return aspawn, await_


class Ticker:
    """A task that sleeps 1 ms at a time and records the longest gap between ticks."""

    def __init__(self, threads: Threads) -> None:
        self._threads = threads
        self._stop = False
        self.max_gap = 0.0
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop:
            await asyncio.sleep(TICK)
            now = time.perf_counter()
            self.max_gap = max(self.max_gap, now - last)
            last = now
            self._threads.sample_cheap()

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def stop(self) -> float:
        """Stop after the current tick (so a stall in progress is counted); ms past TICK."""
        self._stop = True
        assert self.task is not None
        await self.task
        return max(0.0, self.max_gap - TICK) * 1e3


async def async_body(peer: Peer, p: Params) -> dict[str, Any]:
    threads = Threads()  # the baseline: loop running, nothing spawned yet
    meta: dict[str, Any] = {}
    spawn, wait = make_ops(peer, p, meta)
    out: dict[str, Any] = {}
    for _ in range(p.warmup):
        proc = await spawn([TRUE])
        if peer.api == "aioproc":
            meta["mode"] = proc.mode
        await wait(proc)
    threads.sample()

    # (a) sequential spawn + wait
    rates = []
    for n in batches(p.seq):
        t0 = time.perf_counter()
        for _ in range(n):
            assert await wait(await spawn([TRUE])) == 0
        rates.append(n / (time.perf_counter() - t0))
    out["seq_per_s"] = statistics.median(rates)
    threads.sample()

    # (c) exit -> wait() latency
    if p.stamp:
        lats = []
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "stamp")
            for _ in range(p.lat):
                await wait(await spawn([p.stamp, path]))
                now = time.monotonic_ns()
                lats.append((now - read_stamp(path)) / 1e3)
        out["lat_p50_us"] = percentile(lats, 50)
        out["lat_p99_us"] = percentile(lats, 99)

    # (b) many concurrent children
    th0, rss0 = threads.sample(), rss_kib()
    t0 = time.perf_counter()
    procs = [await spawn([SLEEP, str(p.sleep_s)]) for _ in range(p.conc)]
    out["conc_spawn_s"] = time.perf_counter() - t0
    await asyncio.sleep(0.05)  # some watchers start their threads lazily
    out["conc_threads"] = threads.sample() - th0
    out["conc_rss_kib"] = rss_kib() - rss0
    codes = await asyncio.gather(*(wait(x) for x in procs))
    assert all(c == 0 for c in codes), codes
    out["conc_total_s"] = time.perf_counter() - t0
    del procs

    # The ticker alone: the floor under every stall figure.
    ticker = Ticker(threads)
    ticker.start()
    await asyncio.sleep(p.idle_s)
    out["idle_stall_ms"] = await ticker.stop()

    # (d) loop stall while spawning concurrently
    ticker = Ticker(threads)
    ticker.start()
    await asyncio.sleep(0.005)
    t0 = time.perf_counter()
    procs = await asyncio.gather(*(spawn([SLEEP, str(p.sleep_s)]) for _ in range(p.stall)))
    out["stall_spawn_s"] = time.perf_counter() - t0
    out["stall_ms"] = await ticker.stop()
    codes = await asyncio.gather(*(wait(x) for x in procs))
    assert all(c == 0 for c in codes), codes
    del procs

    # The storm's own floor: as many tasks started by one gather, each doing
    # nothing but yield twice. No spawning library can stall the loop less
    # than the harness does by itself.
    async def nothing() -> int:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return 0

    ticker = Ticker(threads)
    ticker.start()
    await asyncio.sleep(0.005)
    await asyncio.gather(*(nothing() for _ in range(p.storm)))
    out["null_storm_stall_ms"] = await ticker.stop()

    # (e) the storm: spawn and wait, all at once
    async def one() -> int:
        return await wait(await spawn([TRUE]))

    ticker = Ticker(threads)
    ticker.start()
    await asyncio.sleep(0.005)
    t0 = time.perf_counter()
    codes = await asyncio.gather(*(one() for _ in range(p.storm)))
    out["storm_per_s"] = p.storm / (time.perf_counter() - t0)
    out["storm_stall_ms"] = await ticker.stop()
    assert all(c == 0 for c in codes), codes

    threads.sample()
    out["threads_max"] = threads.peak_delta
    out.update(meta)
    return out


def run_loop(loop: str | None, main: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> Any:
    if loop == "uvloop":
        import uvloop

        if sys.version_info >= (3, 11):
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main())
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # pragma: no cover
    return asyncio.run(main())


def child_main(name: str, p: Params) -> None:
    peer = PEER_BY_NAME[name]
    if peer.loop is None:
        out = run_sync(peer, p)
    else:
        out = run_loop(peer.loop, lambda: async_body(peer, p))
    out["peer"] = name
    print(json.dumps(out))


# ------------------------------------------------------------------ the parent
@contextlib.contextmanager
def exit_stamp(required: bool) -> Iterator[str | None]:
    """Compile exit_stamp.c into a temporary directory; yield its path (or None)."""
    src = next((s for s in STAMP_SOURCES if s and os.path.isfile(s)), None)
    gcc = shutil.which("gcc") or shutil.which("cc")
    if src is None or gcc is None:
        why = "exit_stamp.c not found" if src is None else "no gcc"
        if required:
            raise SystemExit(f"cannot build exit_stamp: {why} (set AIOPROC_EXIT_STAMP_SRC)")
        print(f"# latency (c) skipped: {why}", file=sys.stderr)
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="aioproc-bench-") as d:
        exe = os.path.join(d, "exit_stamp")
        subprocess.run([gcc, "-O2", "-o", exe, src], check=True)
        yield exe


def run_child(peer: str, p: Params, timeout: float) -> dict[str, Any] | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", peer]
    cmd += ["--params", json.dumps(dataclasses.asdict(p))]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"# {peer}: timed out after {timeout:.0f} s", file=sys.stderr)
        return None
    if r.returncode != 0 or not r.stdout.strip():
        print(f"# {peer}: failed, rc={r.returncode}\n{r.stderr[-3000:]}", file=sys.stderr)
        return None
    noise = r.stderr.strip().splitlines()
    if noise:  # e.g. asyncio's "Exception ignored ... signal wakeup fd" in pid mode
        print(f"# {peer}: {len(noise)} line(s) on stderr, the last: {noise[-1]}", file=sys.stderr)
    result: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


def aioproc_importable() -> bool:
    r = subprocess.run([sys.executable, "-c", "import aioproc"], capture_output=True)
    return r.returncode == 0


# Within-round ratios: (name, numerator metric, denominator peer).
RATIOS = (
    ("seq_x_raw", "seq_per_s", "raw"),
    ("lat_p50_x_raw", "lat_p50_us", "raw"),
    ("lat_p99_x_raw", "lat_p99_us", "raw"),
    ("storm_x_popen", "storm_per_s", "popen"),
)


# Within-round ratios to the floor peer of the same loop: (name, metric).
FLOOR_RATIOS = (
    ("seq_x_floor", "seq_per_s"),
    ("lat_p50_x_floor", "lat_p50_us"),
)
FLOOR_OF_LOOP = {"asyncio": "floor", "uvloop": "floor-uvloop"}


def add_ratios(round_: dict[str, dict[str, Any]]) -> None:
    def ratio(value: Any, base: Any) -> float | None:
        if isinstance(base, (int, float)) and isinstance(value, (int, float)) and base > 0:
            return value / base
        return None

    for key, metric, base_peer in RATIOS:
        base = round_.get(base_peer, {}).get(metric)
        for res in round_.values():
            r = ratio(res.get(metric), base)
            if r is not None:
                res[key] = r
    for name, res in round_.items():
        loop = PEER_BY_NAME[name].loop if name in PEER_BY_NAME else None
        floor = round_.get(FLOOR_OF_LOOP.get(loop or "", ""), {})
        for key, metric in FLOOR_RATIOS:
            r = ratio(res.get(metric), floor.get(metric))
            if r is not None:
                res[key] = r
        # Threads beyond the spawn pool: waiting must add none, whatever the
        # pool (issue 4's bounded pool for the fork/exec step) holds.
        peak, pool = res.get("threads_max"), res.get("spawn_workers")
        if isinstance(peak, int) and isinstance(pool, int):
            res["threads_beyond_pool"] = max(0, peak - pool)
        # The storm stall beyond what the harness alone stalls (null storm).
        stall, null = res.get("storm_stall_ms"), res.get("null_storm_stall_ms")
        if isinstance(stall, (int, float)) and isinstance(null, (int, float)):
            res["storm_own_stall_ms"] = max(0.0, stall - null)


def medians(rounds: list[dict[str, dict[str, Any]]], peers: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in peers:
        runs = [r[name] for r in rounds if name in r]
        if not runs:
            continue
        row: dict[str, Any] = {"rounds": len(runs)}
        keys = {k for run in runs for k in run}
        for k in sorted(keys):
            vals = [run[k] for run in runs if k in run]
            if k in ("threads_max", "threads_beyond_pool"):  # the worst round
                row[k] = max(vals)
            elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
                row[k] = statistics.median(vals)
            else:
                row[k] = vals[0]
        out[name] = row
    return out


# The two tables: (metric, header, format) per column.
THROUGHPUT = (
    ("seq_per_s", "seq/s", "{:.0f}"),
    ("seq_x_raw", "x raw", "{:.2f}"),
    ("seq_x_floor", "x floor", "{:.2f}"),
    ("conc_total_s", "conc s", "{:.3f}"),
    ("conc_threads", "conc thr", "{:.0f}"),
    ("conc_rss_kib", "conc RSS KiB", "{:.0f}"),
    ("storm_per_s", "storm/s", "{:.0f}"),
    ("storm_x_popen", "x popen", "{:.2f}"),
    ("threads_max", "thr max", "{:.0f}"),
    ("spawn_workers", "pool", "{:.0f}"),
)
LATENCY = (
    ("lat_p50_us", "lat p50 us", "{:.0f}"),
    ("lat_p50_x_raw", "x raw", "{:.2f}"),
    ("lat_p50_x_floor", "x floor", "{:.2f}"),
    ("lat_p99_us", "lat p99 us", "{:.0f}"),
    ("lat_p99_x_raw", "x raw", "{:.2f}"),
    ("stall_spawn_s", "spawn200 s", "{:.3f}"),
    ("stall_ms", "stall200 ms", "{:.1f}"),
    ("storm_stall_ms", "storm stall ms", "{:.1f}"),
    ("null_storm_stall_ms", "null storm ms", "{:.1f}"),
    ("storm_own_stall_ms", "own storm ms", "{:.1f}"),
    ("idle_stall_ms", "idle stall ms", "{:.1f}"),
)


def cell(row: dict[str, Any], metric: str, fmt: str) -> str:
    v = row.get(metric)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return fmt.format(v)


def render_grid(headers: list[str], rows: list[list[str]], markdown: bool, left: int = 1) -> str:
    """A table: the first ``left`` columns left-aligned, the others right-aligned."""
    if markdown:
        lines = ["| " + " | ".join(headers) + " |"]
        lines.append("|" + "|".join([":---"] * left + ["---:"] * (len(headers) - left)) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join(line(r) for r in [headers, *rows])


def render_table(
    med: dict[str, dict[str, Any]], columns: Sequence[tuple[str, str, str]], markdown: bool
) -> str:
    headers = ["peer", *(h for _, h, _ in columns)]
    rows = [[name, *(cell(row, m, f) for m, _, f in columns)] for name, row in med.items()]
    return render_grid(headers, rows, markdown)


@dataclasses.dataclass
class Target:
    what: str
    metric: str
    op: str  # ">=", "<=" or "=="
    bound: float
    unit: str


TARGETS = (
    Target("sequential spawn+wait vs raw posix_spawn", "seq_x_raw", ">=", 0.9, "x"),
    Target("no thread per child (256 concurrent)", "conc_threads", "==", 0, " threads"),
    Target(
        "no thread beyond the spawn pool (peak, worst round)",
        "threads_beyond_pool",
        "==",
        0,
        " threads",
    ),
    Target("p50 exit->wait latency vs raw waitpid", "lat_p50_x_raw", "<=", 1.3, "x"),
    Target("storm rate vs sync Popen storm", "storm_x_popen", ">=", 1.0, "x"),
    Target("storm loop stall", "storm_stall_ms", "<=", 5.0, " ms"),
)


def meets(v: Any, op: str, bound: float) -> bool | None:
    if not isinstance(v, (int, float)) or math.isnan(v):
        return None
    return {">=": v >= bound, "<=": v <= bound, "==": v == bound}[op]


def check_targets(
    med: dict[str, dict[str, Any]], rounds: list[dict[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Each target for each pidfd row: the median's verdict, the range and rounds met."""
    results = []
    for name in TARGET_PEERS:
        row = med.get(name)
        if row is None:
            continue
        for t in TARGETS:
            v = row.get(t.metric)
            ok = meets(v, t.op, t.bound)
            per_round = [r[name][t.metric] for r in rounds if t.metric in r.get(name, {})]
            results.append(
                {"peer": name, "target": t.what, "metric": t.metric, "value": v, "op": t.op,
                 "bound": t.bound, "unit": t.unit,
                 "verdict": "n/a" if ok is None else "met" if ok else "MISSED",
                 "min": min(per_round, default=math.nan), "max": max(per_round, default=math.nan),
                 "rounds_met": sum(bool(meets(x, t.op, t.bound)) for x in per_round),
                 "rounds": len(per_round)}
            )  # fmt: skip
    return results


def render_targets(results: list[dict[str, Any]], markdown: bool) -> str:
    def fmt(v: Any, unit: str) -> str:
        if not isinstance(v, (int, float)) or math.isnan(v):
            return "-"
        return f"{v:g}{unit}" if isinstance(v, int) else f"{v:.2f}{unit}"

    rows = [
        [r["peer"], r["target"], f"{r['op']} {fmt(r['bound'], r['unit'])}",
         fmt(r["value"], r["unit"]),
         f"{fmt(r['min'], '')} .. {fmt(r['max'], '')}",
         f"{r['rounds_met']}/{r['rounds']}", r["verdict"]]
        for r in results
    ]  # fmt: skip
    headers = ["peer", "target", "bound", "median", "range", "rounds met", "verdict"]
    return render_grid(headers, rows, markdown, left=2)


def git_rev() -> str | None:
    """The checkout's commit, with "+dirty" when aioproc/ has uncommitted changes."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "-uno", "--", "aioproc"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "kernel": platform.release(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    for mod in ("uvloop", "aioproc"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # an optional peer: any failure means absent
            info[mod] = None
    info["aioproc_rev"] = git_rev()
    with contextlib.suppress(Exception):
        where = Path(str(__import__("aioproc").__file__)).resolve().parent.parent
        if where != REPO:  # e.g. PYTHONPATH=<a snapshot> to pin the code under test
            info["aioproc_rev"] = f"from {where}"
    return info


def draw_chart(med: dict[str, dict[str, Any]], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--chart needs matplotlib: pip install -e '.[bench]'") from None
    panels = (
        ("seq_x_raw", "sequential spawn+wait, x raw (higher is better)", 0.9),
        ("lat_p50_x_raw", "p50 exit->wait latency, x raw (lower is better)", 1.3),
        ("storm_x_popen", "storm spawns/s, x sync Popen (higher is better)", 1.0),
        ("storm_stall_ms", "storm loop stall, ms (lower is better)", 5.0),
    )
    names = list(med)
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.6 * len(panels)), sharex=True)
    for ax, (metric, title, target) in zip(axes, panels, strict=True):
        vals = [med[n].get(metric, math.nan) for n in names]
        colors = ["tab:blue" if n.startswith("aioproc") else "tab:gray" for n in names]
        ax.bar(names, [0 if math.isnan(v) else v for v in vals], color=colors)
        if metric.endswith("_ms"):
            ax.set_yscale("symlog", linthresh=1.0)  # stalls span 0.1 ms to seconds
        ax.axhline(target, color="tab:red", linestyle="--", linewidth=1, label="target")
        ax.set_title(title, fontsize=10)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small N and one round (smoke test)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 5; 1 with --quick)")
    ap.add_argument("--only", default="", help="comma-separated peers, globs allowed ('aioproc*')")
    ap.add_argument("--json", metavar="FILE", help="write every round, medians and targets")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables")
    ap.add_argument("--chart", metavar="PNG", help="draw the ratios (needs matplotlib)")
    ap.add_argument("--seed", type=int, default=0, help="seed for the peer order")
    ap.add_argument("--timeout", type=float, default=600, help="per-peer-run limit, s")
    ap.add_argument(
        "--spawn-workers",
        type=int,
        help="aioproc spawn worker pool size (0: spawn inline; default: the library default)",
    )
    for f in dataclasses.fields(Params):
        if f.name in ("stamp", "spawn_workers"):
            continue
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), dest=f.name)
    ap.add_argument("--list", action="store_true", help="list the peers and exit")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    a = parse_args(argv)
    if a.child:
        child_main(a.child, Params(**json.loads(a.params)))
        return 0
    if a.list:
        for peer in PEERS:
            print(f"{peer.name:20} {peer.what}")
        return 0

    p = dataclasses.replace(QUICK) if a.quick else Params()
    for f in dataclasses.fields(Params):
        if getattr(a, f.name, None) is not None:
            setattr(p, f.name, getattr(a, f.name))
    rounds_n = max(1, a.rounds or (1 if a.quick else 5))
    patterns = [s.strip() for s in a.only.split(",") if s.strip()]
    peers = [
        x.name
        for x in PEERS
        if not patterns or any(fnmatch.fnmatch(x.name, pat) for pat in patterns)
    ]
    if not peers:
        raise SystemExit(f"--only {a.only!r} matches no peer; see --list")
    if any(n.startswith("aioproc") for n in peers) and not aioproc_importable():
        print("# aioproc is not importable: its rows are skipped", file=sys.stderr)
        peers = [n for n in peers if not n.startswith("aioproc")]

    info = machine()
    rng = random.Random(a.seed)
    rounds: list[dict[str, dict[str, Any]]] = []
    loads: list[float] = []  # the 1-minute load average as each round began
    failures = 0
    with exit_stamp(required=False) as stamp:
        p.stamp = stamp
        for i in range(rounds_n):
            order = peers[:]
            rng.shuffle(order)
            load = os.getloadavg()[0]
            loads.append(load)
            print(
                f"# round {i + 1}/{rounds_n} (load {load:.2f}): {', '.join(order)}",
                file=sys.stderr,
                flush=True,
            )
            round_: dict[str, dict[str, Any]] = {}
            for name in order:
                res = run_child(name, p, a.timeout)
                if res is None:
                    failures += 1
                else:
                    round_[name] = res
            add_ratios(round_)
            rounds.append(round_)
    med = medians(rounds, peers)
    targets = check_targets(med, rounds)

    params = {k: v for k, v in dataclasses.asdict(p).items() if k != "stamp"}
    header = (
        f"{info['date']} | Linux {info['kernel']} | {info['cpu']} x{info['cores']} | "
        f"Python {info['python']} | uvloop {info['uvloop']} | "
        f"aioproc {info['aioproc']} ({info['aioproc_rev']}) | "
        f"{rounds_n} round(s), medians, load {min(loads):.1f}..{max(loads):.1f} | "
        + ", ".join(f"{k}={v}" for k, v in params.items() if v is not None)
    )
    md = a.markdown
    print(("" if md else "# ") + header)
    print()
    print(render_table(med, THROUGHPUT, md))
    print()
    print(render_table(med, LATENCY, md))
    if targets:
        print()
        print(render_targets(targets, md))
    if a.json:
        with open(a.json, "w") as out:
            json.dump(
                {"machine": info, "params": params, "rounds": rounds, "median": med,
                 "targets": targets, "loadavg": loads}, out, indent=1, default=str,
            )  # fmt: skip
    if a.chart:
        draw_chart(med, a.chart)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

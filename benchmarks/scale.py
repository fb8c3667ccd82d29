"""Scale: what 10 to 10,000 live children cost the parent, aioproc against its peers.

For each peer and each size N, a fresh interpreter (this script re-run with
``--child PEER N``) does, in order:

1. warm up (five children spawned and waited for), then record the baseline:
   RSS and threads;
2. ``seq``: N ``sleep`` children spawned one after another; the rate is N /
   wall time. With all N alive (nobody waiting on them yet): memory per child
   = RSS growth / N, and the extra threads, split into spawn workers
   (aioproc's bounded pool, ``aioproc-spawn``; trio's ``Trio thread`` cache,
   which runs ``Popen``) and the rest: threads that exist for *waiting*
   (asyncio's default child watcher on Python < 3.12 runs one per child);
3. ``probe``: with all N alive, what they cost a new spawn: ``--probe``
   ``/bin/true`` children spawned and waited for one after another (the
   rate), then as many ``/bin/echo`` children whose stdout is piped and read
   to its end; and the CPU time per spawn, ours and the children's;
4. ``wait()`` latency: ``--samples`` children, spread over the N, are killed
   one at a time while the others live; latency = kill() to wait() returning
   (median and p90);
5. the rest are killed at once and reaped (``reap all s``);
6. ``burst``: N children spawned concurrently (one gather), then killed and
   reaped; the rate, and the most threads seen meanwhile.

The ``seq`` rate of step 2 counts what the N children cost while they start
(each is a process the machine has to run); step 3 holds them all and asks
what they cost a spawn, so that its rate is comparable from one N to another.

``--pair`` compares two sizes at the same time instead: for each peer, two
interpreters, one holding 10 children and one holding N, do step 3 in step,
in alternating plain and piped windows of ``--window`` seconds, and then
step 4; printed are each side's rates, the window-by-window ratio (median and
range) and each side's kill-to-wait median. On a machine shared with other
work, that ratio is the one to trust: both sides run under the same load.

Every child must have been reaped at the end (the peer fails otherwise). A
peer that fails or times out at some N is not run at larger N: it did not
survive. Results are printed as a table, optionally saved as JSON, and drawn
(matplotlib, the ``bench`` extra) to ``docs/img/scale.png``.

    .venv/bin/python benchmarks/scale.py                       # all peers, 10..10,000
    .venv/bin/python benchmarks/scale.py --sizes 10,100 --peers aioproc,trio --no-chart
    .venv/bin/python benchmarks/scale.py --json scale.json --markdown
    .venv/bin/python benchmarks/scale.py --pair --sizes 10000 --peers aioproc,aioproc-uvloop

The file-descriptor limit is raised to its hard limit in each child (pidfd-based
peers hold one descriptor per child); pid_max and ``ulimit -u`` are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SLEEP = ["/bin/sleep", "600"]  # outlives any run; the script kills them all
PEERS = {
    "aioproc": "aioproc.spawn, pidfd mode, asyncio's default loop",
    "aioproc-uvloop": "aioproc.spawn, pidfd mode, uvloop",
    "aioproc-pid": "aioproc.spawn, pid mode (SIGCHLD + waitid), asyncio's default loop",
    "asyncio": "asyncio.create_subprocess_exec, this Python's default child watcher",
    "uvloop": "asyncio.create_subprocess_exec on uvloop (libuv, SIGCHLD)",
    "trio": "trio.lowlevel.open_process (Popen in a worker thread, pidfd wait)",
}
SPAWN_WORKER_NAMES = ("aioproc-spawn", "Trio thread")


# ------------------------------------------------------------------ /proc
def status_field(name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise KeyError(name)


def rss_kib() -> int:
    return status_field("VmRSS")


def threads() -> int:
    return status_field("Threads")


def spawn_workers() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(SPAWN_WORKER_NAMES))


def children() -> int:
    n = 0
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/self/task/{tid}/children") as f:
            n += len(f.read().split())
    return n


# ------------------------------------------------------------------ peers
class Ops:
    """What the measurement needs from a peer: spawn, kill, wait, gather, a tick."""

    spawn: Callable[[list[str]], Awaitable[Any]]
    piped: Callable[[list[str]], Awaitable[Any]]  # spawn, stdout piped and read to EOF, wait
    wait: Callable[[Any], Awaitable[Any]]
    gather: Callable[..., Awaitable[list[Any]]]
    tick: Callable[[], Awaitable[None]]  # give the loop one turn

    @staticmethod
    def kill(proc: Any) -> None:
        proc.kill()


def asyncio_ops(peer: str) -> Ops:
    import asyncio

    ops = Ops()
    if peer.startswith("aioproc"):
        import aioproc

        aioproc.set_wait_mode("pid" if peer == "aioproc-pid" else "pidfd")

        async def spawn(argv: list[str]) -> Any:
            return await aioproc.spawn(argv)

        async def piped(argv: list[str]) -> Any:
            proc = await aioproc.spawn(argv, stdout=aioproc.PIPE)
            return await proc.communicate()

    else:

        async def spawn(argv: list[str]) -> Any:
            return await asyncio.create_subprocess_exec(*argv)

        async def piped(argv: list[str]) -> Any:
            proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
            return await proc.communicate()

    async def wait(proc: Any) -> Any:
        return await proc.wait()

    async def gather(*aws: Awaitable[Any]) -> list[Any]:
        return list(await asyncio.gather(*aws))

    async def tick() -> None:
        await asyncio.sleep(0)

    ops.spawn, ops.wait, ops.gather, ops.tick = spawn, wait, gather, tick
    ops.piped = piped
    return ops


def trio_ops() -> Ops:
    import trio
    import trio.lowlevel

    ops = Ops()

    async def spawn(argv: list[str]) -> Any:
        return await trio.lowlevel.open_process(argv)

    async def wait(proc: Any) -> Any:
        return await proc.wait()

    async def gather(*aws: Awaitable[Any]) -> list[Any]:
        res: list[Any] = [None] * len(aws)

        async def one(i: int, aw: Awaitable[Any]) -> None:
            res[i] = await aw

        async with trio.open_nursery() as nursery:
            for i, aw in enumerate(aws):
                nursery.start_soon(one, i, aw)
        return res

    async def tick() -> None:
        await trio.lowlevel.checkpoint()

    async def piped(argv: list[str]) -> Any:
        return await trio.run_process(argv, capture_stdout=True)

    ops.spawn, ops.wait, ops.gather, ops.tick = spawn, wait, gather, tick
    ops.piped = piped
    return ops


# ------------------------------------------------------------ measurement
PROBE = ["/bin/true"]
PROBE_PIPED = ["/bin/echo", "probe"]


def cpu_s() -> tuple[float, float]:
    """CPU seconds used so far: ours, and our reaped children's."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


async def probe(ops: Ops, count: int, piped: bool) -> dict[str, float]:
    """``count`` short children spawned and waited for one after another.

    The rate, and the CPU per spawn: ours, and the children's (they are the
    only children reaped meanwhile, so RUSAGE_CHILDREN counts exactly them).
    """
    cpu0, t0 = cpu_s(), time.perf_counter()
    for _ in range(count):
        if piped:
            await ops.piped(PROBE_PIPED)
        else:
            await ops.wait(await ops.spawn(PROBE))
    wall = time.perf_counter() - t0
    cpu1 = cpu_s()
    return {
        "per_s": count / wall,
        "parent_cpu_us": (cpu1[0] - cpu0[0]) / count * 1e6,
        "child_cpu_us": (cpu1[1] - cpu0[1]) / count * 1e6,
    }


async def latency(ops: Ops, picked: list[Any]) -> list[float]:
    """kill() to wait() returning, one child at a time, sorted (seconds)."""
    lat = []
    for proc in picked:
        t0 = time.perf_counter()
        Ops.kill(proc)
        await ops.wait(proc)
        lat.append(time.perf_counter() - t0)
    return sorted(lat)


async def measure(ops: Ops, n: int, samples: int, probes: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n}
    for _ in range(5):
        await ops.wait(await ops.spawn(["/bin/true"]))
    gc.collect()
    base_rss, base_threads = rss_kib(), threads()

    # 1. N children, spawned one after another: what holding them costs.
    t0 = time.perf_counter()
    procs = [await ops.spawn(SLEEP) for _ in range(n)]
    # Included in the time: what the loop still had to do for the new
    # children (an inline spawn may return without the loop having run).
    for _ in range(3):
        await ops.tick()
    out["spawn_seq_per_s"] = n / (time.perf_counter() - t0)
    gc.collect()
    out["rss_per_child_b"] = (rss_kib() - base_rss) * 1024 / n
    extra = threads() - base_threads
    workers = spawn_workers()
    out["spawn_worker_threads"] = workers
    out["waiting_threads"] = max(0, extra - workers)
    out["live_children"] = children()

    # 2. What the N, all alive, cost a spawn: short children, one after another.
    for piped, key in ((False, "probe"), (True, "piped")):
        for name, value in (await probe(ops, probes, piped)).items():
            out[f"{key}_{name}"] = value

    # 3. kill() -> wait() latency on a few children, the others alive.
    step = max(1, n // samples)
    picked = procs[::step][:samples]
    lat = await latency(ops, picked)
    out["wait_latency_ms_p50"] = statistics.median(lat) * 1e3
    out["wait_latency_ms_p90"] = lat[min(len(lat) - 1, int(len(lat) * 0.9))] * 1e3

    # 4. The rest killed at once and reaped.
    picked_ids = {id(p) for p in picked}
    rest = [p for p in procs if id(p) not in picked_ids]
    t0 = time.perf_counter()
    for proc in rest:
        Ops.kill(proc)
    await ops.gather(*(ops.wait(p) for p in rest))
    out["reap_all_s"] = time.perf_counter() - t0
    del procs, rest, picked
    if children():
        raise SystemExit(f"{children()} children were not reaped")

    # 5. N children spawned concurrently (one gather): the burst rate, and the
    # threads used meanwhile (spawn workers, or a thread per child).
    peak = threads()
    spawned = 0

    async def spawn_one() -> Any:
        nonlocal peak, spawned
        proc = await ops.spawn(SLEEP)
        spawned += 1
        if spawned % 64 == 0:
            peak = max(peak, threads())
        return proc

    t0 = time.perf_counter()
    procs = await ops.gather(*(spawn_one() for _ in range(n)))
    out["spawn_burst_per_s"] = n / (time.perf_counter() - t0)
    out["threads_peak_burst"] = max(peak, threads()) - base_threads
    for proc in procs:
        Ops.kill(proc)
    await ops.gather(*(ops.wait(p) for p in procs))
    out["left_after"] = children()
    if out["left_after"]:
        raise SystemExit(f"{out['left_after']} children were not reaped")
    return out


async def measure_paired(
    ops: Ops, n: int, samples: int, probes: int, windows: int, window_s: float
) -> dict[str, Any]:
    """One side of ``--pair``: hold N, say ``ready``, and on ``go`` probe in windows.

    Windows alternate between plain and piped spawns and last ``window_s``
    each, so that the two sides, started together, probe at the same moments.
    """
    for _ in range(5):
        await ops.wait(await ops.spawn(["/bin/true"]))
    procs = [await ops.spawn(SLEEP) for _ in range(n)]
    gc.collect()
    print("ready", flush=True)
    sys.stdin.readline()  # "go": the loop need not run meanwhile
    out: dict[str, Any] = {"n": n, "probe_per_s": [], "piped_per_s": []}
    cpu = {False: [0.0, 0.0, 0.0], True: [0.0, 0.0, 0.0]}  # ours, children's, spawns
    for w in range(2 * windows):
        piped = w % 2 == 1
        count, cpu0, t0 = 0, cpu_s(), time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < window_s:
            if piped:
                await ops.piped(PROBE_PIPED)
            else:
                await ops.wait(await ops.spawn(PROBE))
            count += 1
        cpu1 = cpu_s()
        out["piped_per_s" if piped else "probe_per_s"].append(count / elapsed)
        total = cpu[piped]
        total[0] += cpu1[0] - cpu0[0]
        total[1] += cpu1[1] - cpu0[1]
        total[2] += count
    for piped, key in ((False, "probe"), (True, "piped")):
        parent, kids, spawns = cpu[piped]
        out[f"{key}_parent_cpu_us"] = parent / spawns * 1e6
        out[f"{key}_child_cpu_us"] = kids / spawns * 1e6
    lat = await latency(ops, procs[: min(samples, n)])
    out["wait_latency_ms_p50"] = statistics.median(lat) * 1e3
    rest = procs[min(samples, n) :]
    for proc in rest:
        Ops.kill(proc)
    await ops.gather(*(ops.wait(p) for p in rest))
    if children():
        raise SystemExit(f"{children()} children were not reaped")
    return out


def child_main(peer: str, n: int, args: argparse.Namespace) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.pair:
        run = functools.partial(
            measure_paired, n=n, samples=args.samples, probes=args.probe,
            windows=args.windows, window_s=args.window,
        )  # fmt: skip
    else:
        run = functools.partial(measure, n=n, samples=args.samples, probes=args.probe)
    if peer == "trio":
        import trio

        result = trio.run(functools.partial(run, trio_ops()))
    else:
        import asyncio

        ops = asyncio_ops(peer)
        if peer in ("aioproc-uvloop", "uvloop"):
            import uvloop

            result = uvloop.run(run(ops))
        else:
            result = asyncio.run(run(ops))
    result["peer"] = peer
    print(json.dumps(result), flush=True)


# ----------------------------------------------------------------- driver
def child_cmd(peer: str, n: int, args: argparse.Namespace) -> list[str]:
    samples = str(min(args.samples, n))
    cmd = [sys.executable, __file__, "--child", peer, str(n), "--samples", samples]
    cmd += ["--probe", str(args.probe), "--windows", str(args.windows)]
    cmd += ["--window", str(args.window)] + (["--pair"] if args.pair else [])
    return cmd


PAIR_BASE = 10  # the size each --pair size is compared with


def run_pair(peer: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """``--pair``: 10 and ``n`` live children in two interpreters probing together."""
    sides = [
        subprocess.Popen(
            child_cmd(peer, size, args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for size in (PAIR_BASE, n)
    ]
    try:
        for side in sides:
            assert side.stdout is not None
            if side.stdout.readline().strip() != "ready":
                raise RuntimeError("a side failed before it was ready")
        for side in sides:
            assert side.stdin is not None
            side.stdin.write("go\n")
            side.stdin.flush()
        outs = [side.communicate(timeout=args.timeout) for side in sides]
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        for side in sides:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(side.pid, signal.SIGKILL)
        errs = [side.communicate()[1].strip().splitlines() for side in sides]
        last = next((e[-1] for e in errs if e), "?")
        return {"peer": peer, "n": n, "failed": f"{exc or 'timed out'}: {last}"}
    for side in sides:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(side.pid, signal.SIGKILL)
    if any(side.returncode != 0 for side in sides):
        last = next((e.strip().splitlines()[-1] for _, e in outs if e.strip()), "?")
        return {"peer": peer, "n": n, "failed": f"exit {[s.returncode for s in sides]}: {last}"}
    base, big = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    result: dict[str, Any] = {"peer": peer, "n": n, "base": base, "big": big}
    for key in ("probe", "piped"):
        ratios = [b / a for a, b in zip(base[f"{key}_per_s"], big[f"{key}_per_s"], strict=True)]
        result[f"{key}_ratio"] = statistics.median(ratios)
        result[f"{key}_ratio_min"], result[f"{key}_ratio_max"] = min(ratios), max(ratios)
    return result


PAIR_HEADERS = [
    "peer", "N", f"spawn+wait/s {PAIR_BASE}", "spawn+wait/s N", "ratio (range)",
    f"piped/s {PAIR_BASE}", "piped/s N", "ratio (range)",
    f"piped CPU us {PAIR_BASE}", "piped CPU us N", f"wait p50 ms {PAIR_BASE}", "wait p50 ms N",
]  # fmt: skip


def pair_row(r: dict[str, Any]) -> list[str]:
    if "failed" in r:
        return [r["peer"], str(r["n"]), f"FAILED: {r['failed']}"] + [""] * (len(PAIR_HEADERS) - 3)
    base, big = r["base"], r["big"]
    row = [r["peer"], str(r["n"])]
    for key in ("probe", "piped"):
        row += [f"{statistics.median(side[f'{key}_per_s']):.0f}" for side in (base, big)]
        row.append(
            f"{r[f'{key}_ratio']:.2f} ({r[f'{key}_ratio_min']:.2f}-{r[f'{key}_ratio_max']:.2f})"
        )
    # ours + the children's
    row += [
        f"{side['piped_parent_cpu_us']:.0f}+{side['piped_child_cpu_us']:.0f}"
        for side in (base, big)
    ]
    row += [f"{side['wait_latency_ms_p50']:.2f}" for side in (base, big)]
    return row


def pair_table(results: list[dict[str, Any]], markdown: bool) -> str:
    return render(PAIR_HEADERS, [pair_row(r) for r in results], markdown)


def run_child(peer: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    timeout = args.timeout
    cmd = child_cmd(peer, n, args)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the peer and every child it spawned
        proc.communicate()
        return {"peer": peer, "n": n, "failed": f"timed out after {timeout:.0f} s"}
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything a failed peer left behind
    if proc.returncode != 0 or not out.strip():
        last = (err.strip().splitlines() or ["?"])[-1]
        return {"peer": peer, "n": n, "failed": f"exit {proc.returncode}: {last}"}
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    noise = [line for line in err.splitlines() if line.strip()]
    if noise:
        result["stderr_lines"] = len(noise)
        result["stderr_first"] = noise[0][:200]
    return result


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    rev = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "kernel": platform.release(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "pid_max": pid_max,
        "nproc_limit": resource.getrlimit(resource.RLIMIT_NPROC)[0],
        "nofile_hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "aioproc_rev": rev or None,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "loadavg": os.getloadavg()[0],
    }


COLUMNS = [
    ("peer", "peer", "{}"),
    ("N", "n", "{}"),
    ("seq spawn/s", "spawn_seq_per_s", "{:.0f}"),
    ("burst spawn/s", "spawn_burst_per_s", "{:.0f}"),
    ("B/child", "rss_per_child_b", "{:.0f}"),
    ("wait thr", "waiting_threads", "{}"),
    ("spawn thr", "spawn_worker_threads", "{}"),
    ("burst peak thr", "threads_peak_burst", "{}"),
    ("spawn+wait/s", "probe_per_s", "{:.0f}"),
    ("piped/s", "piped_per_s", "{:.0f}"),
    ("wait p50 ms", "wait_latency_ms_p50", "{:.2f}"),
    ("wait p90 ms", "wait_latency_ms_p90", "{:.2f}"),
    ("reap all s", "reap_all_s", "{:.2f}"),
]


def table(results: list[dict[str, Any]], markdown: bool) -> str:
    rows = []
    for r in results:
        if "failed" in r:
            rows.append([r["peer"], str(r["n"]), f"FAILED: {r['failed']}"] + [""] * 10)
            continue
        rows.append([fmt.format(r[key]) if key in r else "-" for _, key, fmt in COLUMNS])
    headers = [h for h, _, _ in COLUMNS]
    return render(headers, rows, markdown)


def render(headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def draw_chart(results: list[dict[str, Any]], path: Path, info: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if "failed" not in r]
    peers = list(dict.fromkeys(r["peer"] for r in ok))
    panels = [
        ("spawn_seq_per_s", "spawn rate, one after another (children/s)", "log"),
        ("spawn_burst_per_s", "spawn rate, all at once (children/s)", "log"),
        ("rss_per_child_b", "parent memory per live child (bytes)", "log"),
        ("wait_latency_ms_p50", "kill() to wait() return, median (ms)", "log"),
        ("waiting_threads", "threads used for waiting", "symlog"),
        ("reap_all_s", "kill all, reap all (s)", "log"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for ax, (key, title, yscale) in zip(axes.flat, panels, strict=True):
        for peer in peers:
            pts = sorted((r["n"], r[key]) for r in ok if r["peer"] == peer)
            if yscale == "log":  # a 0 (memory at N=10: under one page) has no place on it
                pts = [p for p in pts if p[1] > 0]
            style = "-o" if peer.startswith("aioproc") else "--s"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=peer)
        ax.set_xscale("log")
        if yscale == "symlog":
            ax.set_yscale("symlog", linthresh=1)
            ax.set_ylim(bottom=0)
        else:
            ax.set_yscale(yscale)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("live children")
        ax.grid(True, which="both", alpha=0.3)
    failed = [f"{r['peer']} at {r['n']}: {r['failed']}" for r in results if "failed" in r]
    if failed:
        axes.flat[0].text(0.02, 0.02, "did not survive:\n" + "\n".join(failed),
                          transform=axes.flat[0].transAxes, fontsize=7, color="red")  # fmt: skip
    axes.flat[2].axhline(1536, color="grey", linestyle=":", label="aioproc target (1.5 KB)")
    axes.flat[0].legend(fontsize=8)
    axes.flat[2].legend(fontsize=8)
    fig.suptitle(
        f"aioproc scale ({info['cores']} cores, {info['cpu']}, Linux {info['kernel']}, "
        f"Python {info['python']}, aioproc {info['aioproc_rev']}, {info['date']}, "
        f"load {info['loadavg']:.1f})",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=2, metavar=("PEER", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--samples", type=int, default=20, help="children killed for latency")
    parser.add_argument("--timeout", type=float, default=600, help="per peer and size, seconds")
    parser.add_argument("--json", help="write every result and the machine here")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--chart", default=str(REPO / "docs" / "img" / "scale.png"))
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--chart-from", help="only draw the chart from a --json file")
    parser.add_argument("--probe", type=int, default=200, help="spawns per probe (step 3)")
    parser.add_argument(
        "--pair", action="store_true", help=f"each size against {PAIR_BASE}, at once"
    )
    parser.add_argument("--windows", type=int, default=8, help="--pair: windows of each kind")
    parser.add_argument("--window", type=float, default=0.5, help="--pair: seconds per window")
    args = parser.parse_args()
    if args.child:
        child_main(args.child[0], int(args.child[1]), args)
        return

    if args.chart_from:
        with open(args.chart_from) as f:
            saved = json.load(f)
        draw_chart(saved["results"], Path(args.chart), saved["machine"])
        print(table(saved["results"], args.markdown))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    peers = [p for p in args.peers.split(",") if p]
    unknown = set(peers) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))} (known: {', '.join(PEERS)})")
    info = machine()
    print(json.dumps(info), flush=True)
    if max(sizes) * 2 > info["pid_max"]:
        print(f"warning: pid_max {info['pid_max']} is tight for {max(sizes)} children")
    if args.pair:
        results = []
        for peer in peers:
            for n in sizes:
                r = run_pair(peer, n, args)
                results.append(r)
                print(json.dumps(r), flush=True)
        print()
        print(pair_table(results, args.markdown))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": info, "results": results}, f, indent=1)
        return
    results = []
    for peer in peers:
        for n in sizes:
            r = run_child(peer, n, args)
            results.append(r)
            print(json.dumps(r), flush=True)
            if "failed" in r:
                break  # it did not survive this size: larger ones are skipped
    print()
    print(table(results, args.markdown))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "results": results}, f, indent=1)
    if not args.no_chart:
        try:
            draw_chart(results, Path(args.chart), info)
        except ImportError:
            print("no chart: matplotlib is missing (pip install -e '.[bench]')")
        else:
            print(f"chart: {args.chart}")


if __name__ == "__main__":
    main()

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
3. ``wait()`` latency: ``--samples`` children, spread over the N, are killed
   one at a time while the others live; latency = kill() to wait() returning
   (median and p90);
4. the rest are killed at once and reaped (``reap all s``);
5. ``burst``: N children spawned concurrently (one gather), then killed and
   reaped; the rate, and the most threads seen meanwhile.

Every child must have been reaped at the end (the peer fails otherwise). A
peer that fails or times out at some N is not run at larger N: it did not
survive. Results are printed as a table, optionally saved as JSON, and drawn
(matplotlib, the ``bench`` extra) to ``docs/img/scale.png``.

    .venv/bin/python benchmarks/scale.py                       # all peers, 10..10,000
    .venv/bin/python benchmarks/scale.py --sizes 10,100 --peers aioproc,trio --no-chart
    .venv/bin/python benchmarks/scale.py --json scale.json --markdown

The file-descriptor limit is raised to its hard limit in each child (pidfd-based
peers hold one descriptor per child); pid_max and ``ulimit -u`` are printed.
"""

from __future__ import annotations

import argparse
import contextlib
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

    else:

        async def spawn(argv: list[str]) -> Any:
            return await asyncio.create_subprocess_exec(*argv)

    async def wait(proc: Any) -> Any:
        return await proc.wait()

    async def gather(*aws: Awaitable[Any]) -> list[Any]:
        return list(await asyncio.gather(*aws))

    async def tick() -> None:
        await asyncio.sleep(0)

    ops.spawn, ops.wait, ops.gather, ops.tick = spawn, wait, gather, tick
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

    ops.spawn, ops.wait, ops.gather, ops.tick = spawn, wait, gather, tick
    return ops


# ------------------------------------------------------------ measurement
async def measure(ops: Ops, n: int, samples: int) -> dict[str, Any]:
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

    # 2. kill() -> wait() latency on a few children, the others alive.
    step = max(1, n // samples)
    picked = procs[::step][:samples]
    lat = []
    for proc in picked:
        t0 = time.perf_counter()
        Ops.kill(proc)
        await ops.wait(proc)
        lat.append(time.perf_counter() - t0)
    lat.sort()
    out["wait_latency_ms_p50"] = statistics.median(lat) * 1e3
    out["wait_latency_ms_p90"] = lat[min(len(lat) - 1, int(len(lat) * 0.9))] * 1e3

    # 3. The rest killed at once and reaped.
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

    # 4. N children spawned concurrently (one gather): the burst rate, and the
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


def child_main(peer: str, n: int, samples: int) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if peer == "trio":
        import trio

        result = trio.run(measure, trio_ops(), n, samples)
    else:
        import asyncio

        ops = asyncio_ops(peer)
        if peer in ("aioproc-uvloop", "uvloop"):
            import uvloop

            result = uvloop.run(measure(ops, n, samples))
        else:
            result = asyncio.run(measure(ops, n, samples))
    result["peer"] = peer
    print(json.dumps(result), flush=True)


# ----------------------------------------------------------------- driver
def run_child(peer: str, n: int, samples: int, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", peer, str(n), "--samples", str(samples)]
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
    ("wait p50 ms", "wait_latency_ms_p50", "{:.2f}"),
    ("wait p90 ms", "wait_latency_ms_p90", "{:.2f}"),
    ("reap all s", "reap_all_s", "{:.2f}"),
]


def table(results: list[dict[str, Any]], markdown: bool) -> str:
    rows = []
    for r in results:
        if "failed" in r:
            rows.append([r["peer"], str(r["n"]), f"FAILED: {r['failed']}"] + [""] * 8)
            continue
        rows.append([fmt.format(r[key]) for _, key, fmt in COLUMNS])
    headers = [h for h, _, _ in COLUMNS]
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
    args = parser.parse_args()
    if args.child:
        child_main(args.child[0], int(args.child[1]), args.samples)
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
    results = []
    for peer in peers:
        for n in sizes:
            r = run_child(peer, n, min(args.samples, n), args.timeout)
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

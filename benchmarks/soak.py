"""Soak: 100,000 spawn/wait cycles with pipes and random cancellations; nothing may grow.

    .venv/bin/python benchmarks/soak.py                      # 100,000 cycles, asyncio
    .venv/bin/python benchmarks/soak.py --cycles 20000 --loop uvloop
    .venv/bin/python benchmarks/soak.py --cycles 100000 --workers 16 --seed 7

``--workers`` tasks run cycles concurrently (so spawns also go through the
spawn worker pool). Each cycle picks, at random (``--seed``), one of:

``communicate``  ``true`` with stdin, stdout and stderr pipes, ``communicate()``
``echo``         ``cat`` in ``async with``: write a line, read it back, leave
``cancel-wait``  ``sleep`` with a stdout pipe, ``wait()`` cancelled after a few
                 loop turns, then ``aclose()`` (SIGTERM, reap)
``cancel-spawn`` the ``spawn()`` itself cancelled after 0-2 loop turns (inline
                 or in the pool); a child that got started is closed
``cancel-io``    ``communicate(200 KiB)`` with ``cat`` cancelled mid-transfer,
                 then ``aclose()``
``timeout``      ``aioproc.run(["sleep", ...], timeout=...)`` running out
``missing``      a program that does not exist (FileNotFoundError)

Every cycle also picks the waiting mode (pidfd or pid) of its child. The run
goes in batches of ``--sample-every`` cycles (default: a tenth of the run);
after each batch, with every worker idle, it samples open descriptors,
children, threads and RSS. Descriptors, children and threads must equal the
first sample exactly; RSS may not grow more than ``--rss-tolerance-kib`` over
it. The samples are printed; the exit status is 1 if anything grew.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import sys
import time
from collections import Counter
from typing import Any

import aioproc
from aioproc import PIPE

KINDS = ("communicate", "echo", "cancel-wait", "cancel-spawn", "cancel-io", "timeout", "missing")


def status_field(name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise KeyError(name)


def children() -> int:
    n = 0
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/self/task/{tid}/children") as f:
            n += len(f.read().split())
    return n


def sample(cycle: int, started: float) -> dict[str, Any]:
    gc.collect()
    return {
        "cycle": cycle,
        "fds": len(os.listdir("/proc/self/fd")) - 1,  # minus the one listing them
        "children": children(),
        "threads": status_field("Threads"),
        "rss_kib": status_field("VmRSS"),
        "seconds": round(time.monotonic() - started, 1),
    }


async def turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def cycle(kind: str, rng: random.Random) -> None:
    aioproc.set_wait_mode(rng.choice(("pidfd", "pid")))
    if kind == "communicate":
        proc = await aioproc.spawn(["true"], stdin=PIPE, stdout=PIPE, stderr=PIPE)
        assert await proc.communicate(b"") == (b"", b"")
    elif kind == "echo":
        async with aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE) as proc:
            assert proc.stdin is not None
            assert proc.stdout is not None
            proc.stdin.write(b"ping\n")
            assert await proc.stdout.readline() == b"ping\n"
    elif kind == "cancel-wait":
        proc = await aioproc.spawn(["sleep", "30"], stdout=PIPE)
        waiter = asyncio.ensure_future(proc.wait())
        await turns(rng.randrange(3))
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        await proc.aclose()
    elif kind == "cancel-spawn":
        task = asyncio.ensure_future(aioproc.spawn(["sleep", "30"], stdin=PIPE))
        await turns(rng.randrange(3))
        task.cancel()
        try:
            proc = await task
        except asyncio.CancelledError:
            pass
        else:
            await proc.aclose()
    elif kind == "cancel-io":
        proc = await aioproc.spawn(["cat"], stdin=PIPE, stdout=PIPE)
        talk = asyncio.ensure_future(proc.communicate(b"x" * 200_000))
        await turns(1 + rng.randrange(4))
        talk.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await talk
        await proc.aclose()
    elif kind == "timeout":
        try:
            await aioproc.run(["sleep", "30"], timeout=rng.choice((0.0, 0.001, 0.005)))
        except aioproc.TimeoutExpired:
            pass
    elif kind == "missing":
        try:
            await aioproc.spawn(["/nonexistent/aioproc-soak"], stdout=PIPE)
        except FileNotFoundError:
            pass
        else:  # pragma: no cover
            raise AssertionError("a missing program was spawned")
    else:  # pragma: no cover
        raise ValueError(kind)


async def soak(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    counts: Counter[str] = Counter()
    every = args.sample_every or max(1, args.cycles // 10)
    started = time.monotonic()
    samples = []
    done = 0

    async def worker(n: int, seed: int) -> None:
        wrng = random.Random(seed)
        for _ in range(n):
            kind = wrng.choice(KINDS)
            counts[kind] += 1
            await cycle(kind, wrng)

    while done < args.cycles:
        batch = min(every, args.cycles - done)
        share = [batch // args.workers + (i < batch % args.workers) for i in range(args.workers)]
        await asyncio.gather(*(worker(n, rng.randrange(2**32)) for n in share if n))
        done += batch
        s = sample(done, started)
        samples.append(s)
        print(json.dumps(s), flush=True)

    first = samples[0]
    problems = []
    for s in samples[1:]:
        for key in ("fds", "children", "threads"):
            if s[key] != first[key]:
                problems.append(f"cycle {s['cycle']}: {key} {first[key]} -> {s[key]}")
        if s["rss_kib"] - first["rss_kib"] > args.rss_tolerance_kib:
            problems.append(f"cycle {s['cycle']}: RSS {first['rss_kib']} -> {s['rss_kib']} KiB")
    elapsed = time.monotonic() - started
    summary = {
        "cycles": done,
        "loop": args.loop,
        "workers": args.workers,
        "seconds": round(elapsed, 1),
        "cycles_per_s": round(done / elapsed),
        "kinds": dict(sorted(counts.items())),
        "rss_growth_kib": samples[-1]["rss_kib"] - first["rss_kib"],
        "flat": not problems,
        "problems": problems,
    }
    print(json.dumps(summary), flush=True)
    return 0 if not problems else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sample-every", type=int, default=0, help="default: cycles / 10")
    parser.add_argument("--rss-tolerance-kib", type=int, default=2048)
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        code = uvloop.run(soak(args))
    else:
        code = asyncio.run(soak(args))
    sys.exit(code)


if __name__ == "__main__":
    main()

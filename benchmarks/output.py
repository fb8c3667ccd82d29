"""How fast ``aioproc run`` moves a chatty service's output, in each output mode.

One service prints N short lines (``seq N``) and exits; each row times ``aioproc run``
from launch to exit, less the same run with 1 line (start-up and shutdown), as
``../shared/bench/sup_output.py`` does for the peers. Rounds are interleaved, so the
host's drift hits every mode alike. The table gives the median of the N-line runs
less the median of the 1-line runs: Python's start-up (~0.4 s) varies by tens of
milliseconds, more than a million lines take, and medians of each keep that noise
out of the difference better than a difference per round.

Modes:
  raw          seq N > file (the floor)
  prefix       Procfile, `name | line` on stdout (to a file)
  clock        prefix with --timestamps (HH:MM:SS)
  iso          prefix with --time-format iso
  stderr       prefix with --mark-stderr (stdout and stderr from two pipes)
  json         --log-format json
  file         aioproc.toml, output = a file
  rotate       aioproc.toml, output = { file, max_bytes = 1 MiB, backups = 100 }
               (skipped if this aioproc has no rotation)

Usage: python benchmarks/output.py [--lines N] [--rounds R] [--only MODE,...] [--loop L]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

AIOPROC = [sys.executable, "-m", "aioproc"]


def count_lines(*paths: Path) -> int:
    total = 0
    for path in paths:
        with open(path, "rb") as f:
            total += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return total


def raw(d: Path, n: int, loop: str) -> float:
    t = time.perf_counter()
    with open(d / "out", "wb") as f:
        subprocess.run(["seq", str(n)], stdout=f, check=True)
    return time.perf_counter() - t


def console(*flags: str) -> Callable[[Path, int, str], float]:
    def run(d: Path, n: int, loop: str) -> float:
        (d / "Procfile").write_text(f"x: seq {n}\n")
        t = time.perf_counter()
        with open(d / "out", "wb") as f:
            subprocess.run(
                [*AIOPROC, "run", "--no-control", "--loop", loop, *flags, "Procfile"],
                cwd=d, stdout=f, stderr=subprocess.STDOUT, check=True,
            )  # fmt: skip
        el = time.perf_counter() - t
        assert count_lines(d / "out") >= n, "lines lost"
        return el

    return run


def to_file(output: str) -> Callable[[Path, int, str], float]:
    def run(d: Path, n: int, loop: str) -> float:
        spec = output.replace("LOG", str(d / "x.log"))
        (d / "aioproc.toml").write_text(f'[services.x]\ncommand = "seq {n}"\noutput = {spec}\n')
        t = time.perf_counter()
        subprocess.run(
            [*AIOPROC, "run", "--no-control", "--loop", loop, "aioproc.toml"],
            cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
        )  # fmt: skip
        el = time.perf_counter() - t
        assert count_lines(*d.glob("x.log*")) == n, "lines lost or doubled"
        return el

    return run


MODES: dict[str, Callable[[Path, int, str], float]] = {
    "raw": raw,
    "prefix": console(),
    "clock": console("--timestamps"),
    "iso": console("--time-format", "iso"),
    "stderr": console("--mark-stderr"),
    "json": console("--log-format", "json"),
    "file": to_file('"LOG"'),
    "rotate": to_file('{ file = "LOG", max_bytes = 1048576, backups = 100 }'),
}


def rotation_supported() -> bool:
    with tempfile.TemporaryDirectory() as d:
        Path(d, "aioproc.toml").write_text(
            '[services.x]\ncommand = "true"\noutput = { file = "x.log", max_bytes = 1 }\n'
        )
        res = subprocess.run([*AIOPROC, "check", "aioproc.toml"], cwd=d, capture_output=True)
        return res.returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="")
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    a = ap.parse_args()
    modes = dict(MODES)
    if a.only:
        modes = {k: v for k, v in modes.items() if k in a.only.split(",")}
    if "rotate" in modes and not rotation_supported():
        del modes["rotate"]
    fixed: dict[str, list[float]] = {k: [] for k in modes}
    full: dict[str, list[float]] = {k: [] for k in modes}
    for r in range(a.rounds):
        for name, fn in modes.items():
            got = []
            for n in (1, a.lines):
                d = Path(tempfile.mkdtemp(prefix="aioproc_output_"))
                try:
                    got.append(fn(d, n, a.loop))
                finally:
                    shutil.rmtree(d, ignore_errors=True)
            fixed[name].append(got[0])
            full[name].append(got[1])
            record = {"mode": name, "round": r, "seconds": got[1] - got[0], "fixed_s": got[0]}
            print(json.dumps({**record, "lines": a.lines, "loop": a.loop}), flush=True)
    print(f"{'mode':8} {'seconds':>10} {'lines/s':>12}   (loop: {a.loop}, {a.lines} lines)")
    for name in modes:
        m = max(statistics.median(full[name]) - statistics.median(fixed[name]), 1e-6)
        print(f"{name:8} {m:10.3f} {a.lines / m:12.0f}")


if __name__ == "__main__":
    os.environ.setdefault("NO_COLOR", "1")
    main()

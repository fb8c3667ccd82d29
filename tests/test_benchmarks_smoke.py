"""The benchmark scripts run: each exits 0 at a tiny size and prints what it should.

* ``spawn_wait.py --quick``: both tables, with the ``raw`` and ``aioproc`` rows;
* ``scale.py`` at 10 and 100 live children, aioproc's peers only, no chart: a
  JSON line per peer and size (every child alive while held, none left after),
  then the table with a row for each;
* ``soak.py`` for a few hundred cycles on each loop: the sampled descriptors,
  children and threads stay equal to the first sample, and the summary says
  ``flat`` (the script's exit status is 1 otherwise);
* ``signal_latency.py`` with a small N: a p50/p99 line per row;
* ``storm_floor.py`` with a small storm: a row per loop and kind of task;
* ``control.py`` with 5 services: a p50/p99 row per loop and way of asking;
* ``http_api.py`` with 5 services: a row per loop and request, and the idle CPU row;
* ``output.py`` with 2,000 lines, one round: a JSON line and a row per mode (every
  line arrived, none doubled across rotated files).

No timing is asserted: benchmark numbers belong in docs/benchmarks.md,
docs/reliability.md and docs/signals.md, not in tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SOAK_KINDS = {
    "communicate",
    "echo",
    "cancel-wait",
    "cancel-spawn",
    "cancel-io",
    "timeout",
    "missing",
}


def _run(script: str, *args: str, timeout: float = 50) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.mark.timeout(60)
def test_spawn_wait_quick_prints_tables() -> None:
    r = _run("spawn_wait.py", "--quick", "--only", "raw,floor,floor-pool,aioproc")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    headers = [line for line in lines if line.startswith("peer ")]
    assert len(headers) >= 2, r.stdout  # throughput table, latency table, targets
    assert all("x floor" in h for h in headers[:2]), headers
    for peer in ("aioproc", "raw", "floor", "floor-pool"):
        assert any(line.startswith(peer + " ") for line in lines), r.stdout


@pytest.mark.timeout(60)
def test_scale_small_sizes_print_results_and_table() -> None:
    peers = ["aioproc", "aioproc-uvloop", "aioproc-pid"]
    sizes = [10, 100]
    r = _run(
        "scale.py",
        "--sizes",
        ",".join(map(str, sizes)),
        "--peers",
        ",".join(peers),
        "--samples",
        "5",
        "--timeout",
        "10",
        "--probe",
        "10",
        "--no-chart",  # never overwrite docs/img/scale.png
    )
    assert r.returncode == 0, r.stderr
    machine, *results = _json_lines(r.stdout)
    assert {"kernel", "cores", "python", "pid_max", "aioproc_rev"} <= machine.keys(), machine
    assert [(res["peer"], res["n"]) for res in results] == [(p, n) for p in peers for n in sizes]
    for res in results:
        assert "failed" not in res, res
        assert "stderr_lines" not in res, res  # the peer printed nothing on stderr
        assert res["live_children"] == res["n"], res  # all N alive while held
        assert res["left_after"] == 0, res  # and every one reaped
        assert res["spawn_seq_per_s"] > 0, res
        assert res["spawn_burst_per_s"] > 0, res
        for key in ("probe", "piped"):
            assert res[f"{key}_per_s"] > 0, res
            assert res[f"{key}_child_cpu_us"] >= 0, res

    lines = r.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["peer", "N"])
    for column in ("seq spawn/s", "burst spawn/s", "B/child", "wait thr", "reap all s",
                   "spawn+wait/s", "piped/s"):  # fmt: skip
        assert column in lines[header], lines[header]
    rows = [line.split() for line in lines[header + 1 :] if line.strip()]
    assert [row[:2] for row in rows] == [[p, str(n)] for p in peers for n in sizes], r.stdout
    assert all(len(row) == 13 for row in rows), r.stdout  # no FAILED row
    assert "chart:" not in r.stdout


@pytest.mark.timeout(60)
def test_scale_pair_compares_two_sizes_at_once() -> None:
    r = _run(
        "scale.py", "--pair", "--sizes", "30", "--peers", "aioproc,aioproc-uvloop",
        "--samples", "5", "--windows", "2", "--window", "0.1", "--timeout", "20",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    machine, *results = _json_lines(r.stdout)
    assert "kernel" in machine, machine
    assert [(res["peer"], res["n"]) for res in results] == [
        ("aioproc", 30), ("aioproc-uvloop", 30)
    ]  # fmt: skip
    for res in results:
        assert "failed" not in res, res
        assert (res["base"]["n"], res["big"]["n"]) == (10, 30), res
        for key in ("probe", "piped"):
            for side in (res["base"], res["big"]):
                assert len(side[f"{key}_per_s"]) == 2, res  # a rate per window
                assert all(rate > 0 for rate in side[f"{key}_per_s"]), res
            assert res[f"{key}_ratio_min"] <= res[f"{key}_ratio"] <= res[f"{key}_ratio_max"], res
    lines = r.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["peer", "N"])
    rows = [line.split()[:2] for line in lines[header + 1 :] if line.strip()]
    assert rows == [["aioproc", "30"], ["aioproc-uvloop", "30"]], r.stdout


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_soak_few_cycles_stays_flat(loop: str) -> None:
    r = _run("soak.py", "--cycles", "400", "--sample-every", "100", "--loop", loop)
    assert r.returncode == 0, r.stdout + r.stderr
    *samples, summary = _json_lines(r.stdout)
    assert [s["cycle"] for s in samples] == [100, 200, 300, 400], r.stdout
    first = samples[0]
    for s in samples:
        assert s["children"] == 0, s
        for key in ("fds", "children", "threads"):
            assert s[key] == first[key], (key, first, s)
    assert summary["cycles"] == 400, summary
    assert summary["loop"] == loop, summary
    assert summary["flat"] is True, summary
    assert summary["problems"] == [], summary
    assert set(summary["kinds"]) == SOAK_KINDS, summary  # every kind of cycle ran
    assert sum(summary["kinds"].values()) == 400, summary


@pytest.mark.timeout(60)
def test_signal_latency_small_n_prints_rows() -> None:
    r = _run("signal_latency.py", "100")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "os.kill(getpid(), SIGUSR1) -> receiver running, N=100", r.stdout
    rows = lines[1:]
    assert [row.split()[0] for row in rows] == ["asyncio", "asyncio", "uvloop", "uvloop"], r.stdout
    for row in rows:
        assert " p50 " in row, r.stdout
        assert " p99 " in row, r.stdout
    for row in rows[1::2]:  # aioproc's rows, each with its ratio to the bare callback
        assert "aioproc subscribe" in row, r.stdout
        assert "x bare p50)" in row, r.stdout


@pytest.mark.timeout(60)
def test_storm_floor_prints_a_row_per_loop_and_kind() -> None:
    r = _run("storm_floor.py", "--runs", "1", "--storm", "50")
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    assert [row[:2] for row in rows] == [
        ["asyncio", "yield"],
        ["asyncio", "timer"],
        ["uvloop", "yield"],
        ["uvloop", "timer"],
    ], r.stdout
    assert all(float(row[2]) >= 0 for row in rows), r.stdout


@pytest.mark.timeout(120)
def test_control_status_round_trip_prints_rows() -> None:
    r = _run("control.py", "5", "20", timeout=100)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "control socket status round trip, 5 services, 20 rounds", r.stdout
    assert [row.split()[0] for row in lines[1:]] == ["asyncio", "asyncio", "uvloop", "uvloop"]
    for row in lines[1:]:
        assert " p50 " in row, r.stdout
        assert " p99 " in row, r.stdout


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_shutdown_small_sizes_print_the_curve(loop: str) -> None:
    r = _run("shutdown.py", "--sizes", "5,20", "--loop", loop)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:2] == ["services", "shutdown"], r.stdout
    assert [row.split()[0] for row in lines[1:]] == ["5", "20"], r.stdout


@pytest.mark.timeout(120)
def test_http_round_trips_print_rows() -> None:
    r = _run("http_api.py", "5", "20", "0.5", timeout=100)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "HTTP round trips, 5 services, 20 rounds; idle 0.5 s", r.stdout
    assert [row.split()[0] for row in lines[1:]] == ["asyncio"] * 3 + ["uvloop"] * 3
    for row in lines[1:]:
        assert " p50 " in row or " CPU (" in row, r.stdout


@pytest.mark.timeout(120)
def test_output_modes_print_rows() -> None:
    modes = ["raw", "prefix", "clock", "iso", "stderr", "json", "file", "rotate"]
    r = _run("output.py", "--lines", "2000", "--rounds", "1", timeout=100)
    assert r.returncode == 0, r.stderr
    assert [rec["mode"] for rec in _json_lines(r.stdout)] == modes
    rows = [line.split()[0] for line in r.stdout.splitlines() if not line.startswith("{")]
    assert rows == ["mode", *modes], r.stdout

"""The benchmark script runs: ``benchmarks/spawn_wait.py --quick`` exits 0 and prints a table.

No timing is asserted: benchmark numbers belong in docs/benchmarks.md, not in tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "spawn_wait.py"


@pytest.mark.timeout(60)
def test_spawn_wait_quick_prints_tables() -> None:
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--only", "raw,aioproc"],
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    headers = [line for line in lines if line.startswith("peer ")]
    assert len(headers) >= 2, r.stdout  # throughput table, latency table, targets
    assert any(line.startswith("aioproc ") for line in lines), r.stdout
    assert any(line.startswith("raw ") for line in lines), r.stdout

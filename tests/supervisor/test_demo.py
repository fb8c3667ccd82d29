"""examples/supervisor_demo.py runs, and shows what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "examples" / "supervisor_demo.py"


def test_supervisor_demo_runs() -> None:
    res = subprocess.run(
        [sys.executable, "-W", "error", str(DEMO)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    out = res.stdout
    assert "flaky  FATAL: start limit hit" in out
    assert out.index("db     ready") < out.index("api    started")
    assert out.index("api    stopped") < out.index("db     stopping")
    assert "processes left in api's group: none" in out

"""examples/supervisor_demo.py runs, and shows what it promises."""

from __future__ import annotations

import re
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
    # The services' own lines, with a clock timestamp; db's went to its log file.
    assert re.search(r"^\d\d:\d\d:\d\d flaky \| flaky: crashing$", out, re.M)
    assert "db: listening" not in out.replace("db.log.old: 'db: listening'", "")
    assert re.search(r"^reopened \S+/db\.log$", out, re.M)
    assert "db.log.old: 'db: listening'; a new db.log: True" in out
    # aioproc ctl status, against the demo's control socket while api runs.
    assert re.search(r"\$ aioproc ctl --control \S+/demo\.sock status\n", out)
    table = out[out.index("NAME   STATE") :].split("\n\n")[0].splitlines()
    assert table[0].split() == [
        "NAME", "STATE", "PID", "UPTIME", "RESTARTS", "LAST-EXIT", "READY", "REASON"
    ]  # fmt: skip
    assert table[1].split()[:2] == ["flaky", "fatal"]
    assert table[1].endswith("start limit hit: 4 starts within 30 s")
    assert re.match(r"db\s+running\s+\d+\s+\S+\s+0\s+-\s+yes\s+ready$", table[2])
    assert re.match(r"api\s+running\s+\d+\s+\S+\s+0\s+-\s+yes\s+ready$", table[3])
    assert table[4] == "(exit code 3; 3: some service is not where it should be)"
    # The HTTP face: the page's URL and a /metrics excerpt, read from the demo itself.
    url = re.search(r"^status page: (http://127\.0\.0\.1:\d+/) ", out, re.M)
    assert url is not None
    assert 'aioproc_service_up{service="db"} 1.0' in out
    assert 'aioproc_service_ready{service="flaky"} 0.0' in out
    assert re.search(r'aioproc_service_restarts_total\{service="flaky"\} [1-9]', out)

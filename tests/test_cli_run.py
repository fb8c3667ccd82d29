"""``aioproc run`` (``_cli/_run.py``) as a real command: terminal safety, signals at start-up.

Every command run here is checked to leave no process behind (``nothing_left_behind``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import nothing_left_behind

AIOPROC = [sys.executable, "-m", "aioproc"]
CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
SGR = re.compile("\x1b\\[[0-9;:]*m")

EVIL = r"""printf '\033[31mred\033[0m\r\033[2Kweb | FAKE\033]0;owned\007\n'"""


@pytest.mark.parametrize("raw", [False, True], ids=["default", "raw-output"])
def test_service_output_cannot_rewrite_the_terminal(tmp_path: Path, raw: bool) -> None:
    (tmp_path / "Procfile").write_text(f"evil: {EVIL}\n")
    with nothing_left_behind() as env:
        env["FORCE_COLOR"] = "1"  # as on a terminal: our own colours are on
        res = subprocess.run(
            [*AIOPROC, "run", *(["--raw-output"] if raw else [])],
            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
    (line,) = [x for x in res.stdout.splitlines() if "FAKE" in x]
    payload = line.split("|", 1)[1]
    assert ("\x1b[31mred\x1b[0m" in payload) if raw else (r"\x1b[31mred\x1b[0m" in payload)
    assert r"\x0d\x1b[2Kweb | FAKE\x1b]0;owned\x07" in payload
    # Only our own prefix colours and (with --raw-output) SGR: no CR, no other ESC, no BEL.
    assert not CONTROL.search(SGR.sub("", line))

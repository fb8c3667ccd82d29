"""The documentation site builds, and its runnable examples run.

* ``mkdocs build --strict`` succeeds: no broken link, no unresolved reference
  to the API, no docstring the handler cannot parse.
* Every fenced ```python block preceded by an ``<!-- run -->`` comment is a
  complete program: it is run with this interpreter and must exit 0 without
  printing anything on stderr (warnings are errors), so none can rot.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# "<!-- run -->", blank lines allowed, then a ```python fence, up to the closing fence.
_RUN_BLOCK = re.compile(r"<!--\s*run\s*-->\s*\n```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _runnable_blocks() -> list[tuple[str, str]]:
    blocks = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for match in _RUN_BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            blocks.append((f"{page.name}:{line}", match.group(1)))
    return blocks


BLOCKS = _runnable_blocks()


def test_the_pages_that_promise_examples_have_them() -> None:
    pages = {where.split(":")[0] for where, _ in BLOCKS}
    assert {"index.md", "tutorial.md", "migrating.md"} <= pages, pages


@pytest.mark.parametrize("code", [code for _, code in BLOCKS], ids=[w for w, _ in BLOCKS])
def test_example_runs(code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.stderr == "", result.stderr


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # the parent package is missing
        return False


_DOC_TOOLS = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


@pytest.mark.timeout(300)
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    missing = [name for name in _DOC_TOOLS if not _importable(name)]
    if missing:
        pytest.skip(
            f"the docs tools are not installed ({', '.join(missing)}): "
            "pip install -e '.[docs]' to build the site"
        )
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
         "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    for anchor in ("aioproc.spawn", "aioproc.signals.subscribe", "aioproc.compat.Process"):
        assert f'id="{anchor}"' in api, anchor
    # The docstrings' Sphinx roles are not shown literally (tools/mkdocs_hooks.py).
    assert ":class:<code>" not in api
    assert "<code>Process</code>" in api

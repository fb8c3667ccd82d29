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
import shutil
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

# "<!-- check -->", then a ```toml fence: an aioproc.toml that `aioproc check` accepts.
_CHECK_BLOCK = re.compile(r"<!--\s*check\s*-->\s*\n```toml\n(.*?)^```", re.DOTALL | re.MULTILINE)
CONFIGS = [
    (f"{page.name}:{text.count(chr(10), 0, m.start()) + 1}", m.group(1))
    for page in sorted(DOCS.glob("*.md"))
    for text in [page.read_text(encoding="utf-8")]
    for m in _CHECK_BLOCK.finditer(text)
]


def test_the_pages_that_promise_configurations_have_them() -> None:
    assert {"coming-from.md", "cli.md"} <= {where.split(":")[0] for where, _ in CONFIGS}


@pytest.mark.parametrize("config", [c for _, c in CONFIGS], ids=[w for w, _ in CONFIGS])
def test_configuration_is_accepted_by_aioproc_check(config: str, tmp_path: Path) -> None:
    (tmp_path / "aioproc.toml").write_text(config, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "aioproc", "check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


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


# ------------------------------------------------------------ install lines
# "aioproc" on PyPI is an unrelated project: an install line naming it installs
# a stranger's code. Ours is "aioproc-linux", installed from a checkout or a
# wheel built from one. Catches pip/pip3/python -m pip/uv pip install, uv add,
# poetry add and pipx install naming the bare distribution (with extras, a
# version or quotes), not ./aioproc, aioproc-linux or aioproc_linux-*.whl.
_INSTALLER = (
    r"(?:\bpip3?\s+install|\buv\s+pip\s+install|\buv\s+add|\bpoetry\s+add|\bpipx\s+install)"
)
_BARE_AIOPROC = re.compile(
    _INSTALLER + r"\b[^\n#]*?(?<![\w./-])[\"']?aioproc(?![\w-])(?!\s*/)", re.IGNORECASE
)
_SCANNED_SUFFIXES = {".md", ".py", ".toml", ".txt", ".cfg", ".yml", ".yaml", ".sh", ".ini"}
_SCANNED_NAMES = {"Makefile", "Dockerfile", "run", "Procfile"}
_SKIPPED_DIRS = {".git", "site", "build", "dist", "__pycache__", "node_modules"}


def _project_text_files() -> list[Path]:
    files = []
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts
        if any(
            p in _SKIPPED_DIRS or p.startswith(".venv") or p.endswith(".egg-info") for p in parts
        ):
            continue
        if path.is_file() and (path.suffix in _SCANNED_SUFFIXES or path.name in _SCANNED_NAMES):
            files.append(path)
    return files


@pytest.mark.parametrize(
    ("line", "bad"),
    [
        ("pip install aioproc", True),
        ("RUN pip install --no-cache-dir aioproc", True),
        ("python -m pip install 'aioproc[uvloop]'", True),
        ('pip3 install "aioproc>=0.1"', True),
        ("pip install aioproc==0.2.2", True),
        ("uv add aioproc", True),
        ("uv pip install -U aioproc", True),
        ("poetry add aioproc", True),
        ("pipx install aioproc", True),
        ("pip install ./aioproc", False),
        ("pip install aioproc-linux", False),
        ("pip install /wheels/aioproc_linux-*.whl", False),
        ("pip install -e '.[dev]'", False),
        ("pip wheel --no-deps ./aioproc", False),
        ("pip install aioproc/  # a checkout", False),
        ("make demo   # creates .venv, installs aioproc", False),
    ],
)
def test_the_install_line_pattern(line: str, bad: bool) -> None:
    assert bool(_BARE_AIOPROC.search(line)) is bad


def test_no_install_line_fetches_the_unrelated_pypi_aioproc() -> None:
    here = Path(__file__).resolve()
    found = []
    for path in _project_text_files():
        if path == here:
            continue  # the pattern's own examples
        for number, line in enumerate(
            path.read_text(encoding="utf-8", errors="replace").splitlines(), 1
        ):
            if _BARE_AIOPROC.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "install lines that fetch PyPI's unrelated 'aioproc':\n" + "\n".join(found)


def test_the_distribution_has_a_name_of_its_own() -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] == "aioproc-linux"
    assert (ROOT / "aioproc" / "__init__.py").is_file()  # the import name stays aioproc


# ------------------------------------------------------- README's ten lines
# Programs every Linux has, slim container images included (coreutils and a
# POSIX shell); not ping, git or curl.
_EVERYWHERE = ("sh", "echo", "printf", "sleep", "uname", "cat", "true", "false", "sort", "head")


def test_readme_example_runs_with_only_sh_and_coreutils(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Ten lines\n+```python\n(.*?)^```", readme, re.DOTALL | re.MULTILINE)
    assert match, "README.md has no '## Ten lines' python block"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in _EVERYWHERE:
        found = shutil.which(name)
        assert found, name
        (bin_dir / name).symlink_to(found)
    script = tmp_path / "ten_lines.py"
    script.write_text(match.group(1), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        cwd=tmp_path, env={**os.environ, "PATH": str(bin_dir)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert "tick 3" in result.stdout

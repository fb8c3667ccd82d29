"""The public surface: everything in __all__ exists, is documented, and looks public.

And the layering under it: aioproc's modules import one another one way only.
"""

from __future__ import annotations

import ast
import importlib.machinery
import inspect
import pathlib
from collections.abc import Iterator

import aioproc


def test_all_is_complete() -> None:
    # (ruff keeps __all__ sorted; here: no duplicates, nothing missing.)
    assert len(set(aioproc.__all__)) == len(aioproc.__all__)
    public = {
        name
        for name, obj in vars(aioproc).items()
        if not name.startswith("_") and not inspect.ismodule(obj) and name != "annotations"
    }
    assert public <= set(aioproc.__all__) | {"signals"}, public - set(aioproc.__all__)
    for name in aioproc.__all__:
        assert hasattr(aioproc, name), name


def test_public_objects_say_they_live_in_aioproc() -> None:
    for name in aioproc.__all__:
        obj = getattr(aioproc, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__ == "aioproc", (name, obj.__module__)
            assert obj.__doc__, f"{name} has no docstring"


def test_exceptions_subclass_what_users_already_catch() -> None:
    import subprocess

    assert issubclass(aioproc.ProcessError, subprocess.CalledProcessError)
    assert issubclass(aioproc.ProcessError, aioproc.Error)
    assert issubclass(aioproc.TimeoutExpired, subprocess.TimeoutExpired)
    assert issubclass(aioproc.TimeoutExpired, TimeoutError)
    assert issubclass(aioproc.TimeoutExpired, aioproc.Error)


# ------------------------------------------------------------------ layering
ROOT = pathlib.Path(aioproc.__file__).parent


def _modules() -> dict[str, pathlib.Path]:
    """Every Python module of aioproc, by dotted name (a package by its __init__)."""
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _extensions() -> set[str]:
    """aioproc's C modules (``from . import _clone_exec`` names a module, not the package)."""
    suffixes = [*importlib.machinery.EXTENSION_SUFFIXES, ".pyi", ".c"]
    return {
        ".".join(path.relative_to(ROOT.parent).parts)[: -len(suffix)]
        for path in ROOT.rglob("*")
        for suffix in suffixes
        if path.name.endswith(suffix)
    }


MODULES = _modules()
EXTENSIONS = _extensions() - set(MODULES)


def _module_level(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports run (or, under ``if TYPE_CHECKING:``, read by mypy) at module level."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.If, ast.Try)):
            for block in (node.body, node.orelse, getattr(node, "finalbody", [])):
                yield from _module_level(block)
            for handler in getattr(node, "handlers", []):
                yield from _module_level(handler.body)


def _anywhere(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import in the module, in functions too."""
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node


def _imports(name: str, everywhere: bool = False) -> set[str]:
    """The aioproc modules ``name`` imports (``from pkg import x``: ``pkg.x`` if a module)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    body = ast.parse(path.read_text(), str(path)).body
    found = set()
    for node in (_anywhere if everywhere else _module_level)(body):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in MODULES}
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join([*base, *([node.module] if node.module else [])])
        else:
            target = node.module or ""
        if target not in MODULES:
            continue
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            if sub in MODULES:
                found.add(sub)
            elif sub not in EXTENSIONS:
                found.add(target)
    found.discard(name)
    return found


def test_module_level_imports_form_no_cycle() -> None:
    # TYPE_CHECKING imports included: a cycle mypy reads is a cycle in the
    # design, and the next runtime import along it fails at import time.
    graph = {name: _imports(name) for name in MODULES}
    assert "aioproc._spawn._inbox" in graph["aioproc._spawn"]  # the walk finds imports
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(name) :], name]))
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_exceptions_and_status_import_each_other_one_way() -> None:
    # The errors that carry an ExitStatus live beside it in _status, which takes
    # Error from _exceptions; _exceptions must not import _status, not even for a
    # type nor inside a function.
    assert "aioproc._exceptions" in _imports("aioproc._status")
    assert "aioproc._status" not in _imports("aioproc._exceptions", everywhere=True)


OPERATOR_LAYERS = ("aioproc.supervisor", "aioproc._cli", "aioproc._control", "aioproc._http",
                   "aioproc.control", "aioproc.http", "aioproc.__main__")  # fmt: skip


def _in(name: str, layers: tuple[str, ...]) -> bool:
    return any(name == layer or name.startswith(layer + ".") for layer in layers)


def test_the_core_never_imports_the_operator_layers() -> None:
    # The staircase: _cli -> _control/_http -> supervisor/ -> public API ->
    # _process -> _spawn -> _waiting -> leaves. Imports inside functions count.
    core = [name for name in MODULES if not _in(name, OPERATOR_LAYERS)]
    assert "aioproc._spawn._workers" in core
    for name in core:
        above = {t for t in _imports(name, everywhere=True) if _in(t, OPERATOR_LAYERS)}
        assert not above, (name, above)


def test_the_spawn_package_sits_between_process_and_waiting() -> None:
    # Its modules in their one-way order: each imports only those before it.
    order = ["_spec", "_fallback", "_direct", "_workers", "_inbox"]
    package = "aioproc._spawn"
    assert {n for n in MODULES if n.startswith(package + ".")} == {f"{package}.{m}" for m in order}
    above = ("aioproc._process", "aioproc._run", "aioproc._orphans", "aioproc.compat",
             "aioproc.signals", "aioproc")  # fmt: skip
    for i, module in enumerate([*order, None]):
        name = package if module is None else f"{package}.{module}"
        imports = _imports(name, everywhere=True)
        siblings = {t.rpartition(".")[2] for t in imports if t.startswith(package + ".")}
        allowed = set(order) if module is None else set(order[:i])
        assert siblings <= allowed, (name, siblings - allowed)
        assert not imports & set(above), (name, imports & set(above))
    for name in MODULES:
        if _in(name, ("aioproc._waiting",)):
            assert not {t for t in _imports(name, everywhere=True) if _in(t, (package,))}, name

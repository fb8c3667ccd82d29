"""The public surface: everything in __all__ exists, is documented, and looks public."""

from __future__ import annotations

import inspect

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

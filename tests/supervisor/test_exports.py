"""The public surface of aioproc.supervisor."""

from __future__ import annotations

import inspect

import aioproc.supervisor as sup


def test_all_is_complete_and_public_names_live_in_the_package() -> None:
    assert len(set(sup.__all__)) == len(sup.__all__)
    public = {n for n, o in vars(sup).items() if not n.startswith("_") and not inspect.ismodule(o)}
    assert public - {"annotations"} <= set(sup.__all__)
    for name in sup.__all__:
        obj = getattr(sup, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__ == "aioproc.supervisor", name
            assert obj.__doc__, name


def test_the_supervisor_uses_only_the_public_api_below_it() -> None:
    import pathlib
    import re

    root = pathlib.Path(sup.__file__).parent
    for path in [*root.glob("*.py"), *(root.parent / "_cli").glob("*.py")]:
        text = path.read_text()
        # Nothing from aioproc's private modules (aioproc._process, ...), but for
        # leaves with no state of the core's: _procfs (/proc scans and pidfd waits,
        # shared with Process.stop()); _durations, the stateless check of every
        # time in seconds; _limits and _cgroup for their checks of rlimits= and
        # cgroup_limits=, run when a Service or a configuration file is read
        # rather than at each start; _sizes, the stateless grammar of sizes
        # ("10M"); and _util's shielded() (the one cancellation-safe cleanup,
        # shared with the core so it is right once) and is_number() (ASCII digits).
        for leaf in ("_procfs", "_durations", "_limits", "_cgroup", "_sizes"):
            text = text.replace(f"from ..{leaf} import", "")
        text = text.replace("from .._util import shielded", "")
        text = text.replace("from .._util import is_number", "")
        assert not re.search(r"from \.\._|from aioproc\._|import aioproc\._", text), path
        assert "._child" not in text, path  # Process's private handle

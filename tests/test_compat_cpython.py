"""CPython's own asyncio subprocess tests, run through aioproc.compat.

The tests of ``SubprocessMixin`` in ``Lib/test/test_asyncio/test_subprocess.py``
of the running Python are run as they are, with ``asyncio.create_subprocess_exec``
and ``create_subprocess_shell`` replaced by compat's, on a fresh asyncio loop and on
a fresh uvloop. Only the tests that reach into asyncio's transports (or mock
``subprocess.Popen``, which aioproc does not use) are skipped, each with its reason.
The whole module is skipped when this Python was installed without its test suite.
"""

from __future__ import annotations

import asyncio
import unittest
from collections.abc import Callable
from typing import Any

import pytest
import uvloop

from aioproc import compat

cpython: Any
try:
    from test.test_asyncio import test_subprocess as cpython
except ImportError:  # pragma: no cover - a Python without its test package
    cpython = None

pytestmark = [
    pytest.mark.skipif(cpython is None, reason="this Python has no test.test_asyncio package"),
    pytest.mark.usefixtures("no_leaks"),
    pytest.mark.timeout(60),
]

# Test name -> why it cannot run through compat.
NOT_PORTABLE: dict[str, str] = {
    "test_cancel_post_init": "calls loop.subprocess_exec(): asyncio's transport API, not compat's",
    "test_close_kill_running": "calls loop.subprocess_exec() and inspects the transport",
    "test_close_dont_kill_finished": (
        "calls loop.subprocess_exec(), mocks subprocess.Popen and asyncio's child watcher"
    ),
    "test_pause_reading": "reads proc._transport.get_pipe_transport(1): compat has no transports",
    "test_popen_error": "mocks subprocess.Popen, which aioproc does not use",
    "test_popen_error_with_stdin_pipe": "mocks subprocess.Popen, which aioproc does not use",
}

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def _test_names() -> list[str]:
    if cpython is None:
        return []
    return sorted(n for n in dir(cpython.SubprocessMixin) if n.startswith("test_"))


class _Case(unittest.TestCase):
    """Runs one SubprocessMixin test on a loop of its own, closed as asyncio.run() does."""

    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    loop: asyncio.AbstractEventLoop

    def setUp(self) -> None:
        self.loop = self.loop_factory()
        asyncio.set_event_loop(None)  # as CPython's tests: the loop is passed explicitly
        self.addCleanup(self._close_loop)

    def _close_loop(self) -> None:
        loop = self.loop
        try:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


def _case_class() -> type[unittest.TestCase]:
    assert cpython is not None
    return type("CompatSubprocessTests", (cpython.SubprocessMixin, _Case), {})


@pytest.mark.parametrize("loop", sorted(LOOPS))
@pytest.mark.parametrize("name", _test_names())
def test_cpython(name: str, loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if name in NOT_PORTABLE:
        pytest.skip(NOT_PORTABLE[name])
    for module in (asyncio, asyncio.subprocess):
        monkeypatch.setattr(module, "create_subprocess_exec", compat.create_subprocess_exec)
        monkeypatch.setattr(module, "create_subprocess_shell", compat.create_subprocess_shell)
    cls = _case_class()
    cls.loop_factory = staticmethod(LOOPS[loop])  # type: ignore[attr-defined]
    result = unittest.TestResult()
    cls(name).run(result)
    if result.skipped:
        pytest.skip(f"skipped by CPython's test: {result.skipped[0][1]}")
    problems = [text for _, text in result.errors + result.failures]
    assert not problems, "\n".join(problems)

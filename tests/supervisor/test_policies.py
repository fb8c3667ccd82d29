"""Restart decisions (systemd's table), backoff delays and the start limit."""

from __future__ import annotations

import itertools
import re
import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aioproc import ExitStatus
from aioproc.supervisor import Backoff, StartLimit, should_restart
from aioproc.supervisor._policies import StartHistory

OK = ExitStatus.exited(1, 0)
FAIL = ExitStatus.exited(1, 2)
TERM = ExitStatus.killed(1, signal.SIGTERM)
SEGV = ExitStatus.killed(1, signal.SIGSEGV)

# systemd.service(5), "Table 2. Exit causes and the effect of the Restart= settings".
TABLE = [
    # status, reason, no, on-failure, on-abnormal, always
    (OK, "exited", False, False, False, True),
    (TERM, "exited", False, False, False, True),
    (FAIL, "exited", False, True, False, True),
    (SEGV, "exited", False, True, True, True),
    (FAIL, "ready-timeout", False, True, True, True),
    (TERM, "watchdog", False, True, True, True),
    (None, "spawn-failed", False, True, False, True),
]


@pytest.mark.parametrize(("status", "reason", "no", "failure", "abnormal", "always"), TABLE)
def test_systemd_table(
    status: ExitStatus | None, reason: str, no: bool, failure: bool, abnormal: bool, always: bool
) -> None:
    for policy, expected in [
        ("no", no),
        ("on-failure", failure),
        ("on-abnormal", abnormal),
        ("always", always),
    ]:
        assert should_restart(policy, status, reason) is expected, policy  # type: ignore[arg-type]


def test_our_own_stop_is_never_restarted() -> None:
    assert not should_restart("always", TERM, "stopped")


def test_exit_code_overrides() -> None:
    assert not should_restart("on-failure", FAIL, "exited", success_exit_codes={2})
    assert not should_restart("on-failure", SEGV, "exited", success_exit_codes={signal.SIGSEGV})
    assert should_restart("no", FAIL, "exited", restart_exit_codes={2})
    assert should_restart("on-abnormal", TERM, "exited", restart_exit_codes={signal.SIGTERM})
    # An int is an exit code, never a signal number.
    assert should_restart("on-failure", SEGV, "exited", success_exit_codes={11})


@given(
    initial=st.floats(0.001, 5),
    factor=st.floats(1.2, 10),
    cap=st.floats(5, 100),
    jitter=st.floats(0, 0.15),
    rand=st.floats(0, 0.999),
)
def test_backoff_grows_and_stays_under_the_cap(
    initial: float, factor: float, cap: float, jitter: float, rand: float
) -> None:
    b = Backoff(initial, factor, cap, jitter)
    delays = [b.delay(n, rand) for n in range(60)]
    assert all(0 <= d <= cap for d in delays)
    for prev, nxt in itertools.pairwise(delays):
        if prev < cap * (1 - jitter):
            assert nxt >= prev
    assert b.delay(10**6, 0.0) == cap  # no overflow


def test_backoff_and_limit_validation() -> None:
    with pytest.raises(ValueError, match="initial"):
        Backoff(initial=-1)
    with pytest.raises(ValueError, match="factor"):
        Backoff(factor=0.5)
    with pytest.raises(ValueError, match="max"):
        Backoff(initial=10, max=1)
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1)
    with pytest.raises(ValueError, match="burst"):
        StartLimit(burst=0)


def test_start_history_is_a_sliding_window() -> None:
    h = StartHistory(StartLimit(burst=2, interval=10))
    assert h.allow(0)
    assert h.allow(1)
    assert not h.allow(5)  # a third start within 10 s
    assert h.allow(10.5)  # the first one left the window
    assert not h.allow(10.9)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Backoff(initial=NAN), "Backoff.initial must be a number of seconds, not NaN"),
        (lambda: Backoff(max=NAN), "Backoff.max must be a number of seconds, not NaN"),
        (lambda: Backoff(max=INF), "Backoff.max must be a finite number of seconds"),
        (lambda: Backoff(factor=NAN), "Backoff.factor must be finite"),
        (lambda: Backoff(factor=INF), "Backoff.factor must be finite"),
        (lambda: Backoff(jitter=NAN), "Backoff.jitter"),
        (lambda: StartLimit(interval=NAN), "StartLimit.interval must be a number of seconds"),
    ],
)
def test_nan_and_infinite_times_are_refused(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make()  # type: ignore[operator]


def test_an_infinite_start_limit_window_never_slides() -> None:
    # Only compared, never waited for: "at most `burst` starts, ever".
    assert StartLimit(burst=1, interval=INF).interval == INF

"""How ``aioproc run`` ends: one summary line per service, and the exit code.

A service *ended well* when it was stopped and died of its own stop signal or exited
cleanly (code 0, a ``success_exit_codes`` entry, or SIGHUP/SIGINT/SIGTERM/SIGPIPE, as
systemd counts them), when it completed that way on its own, or when it never ran
(the shutdown came before its turn). It *failed* when it is FATAL (start limit,
unspawnable, a dependency that failed), when its last run ended badly (a failing
exit code, an unclean signal, a readiness or watchdog timeout), or when it had to be
SIGKILLed (it outlived ``stop_timeout``, or a second Ctrl-C killed everything).

The exit code is 0 when every service ended well. Otherwise it is that of the
essential service whose failure stopped everything, else that of the first failed
service in the file: its exit code, 128 + N when signal N killed it, 127 or 126 when
its program could not be found or executed, 1 otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..supervisor import Outcome, ServiceState, ServiceStatus

__all__ = ["exit_code", "failed", "summary_line"]


def failed(status: ServiceStatus) -> bool:
    """Whether the service failed (see the module docstring)."""
    if status.state is ServiceState.FATAL:
        return True
    return status.last_clean is False


def _last_exit(status: ServiceStatus) -> str:
    last = status.last_status
    if last is None:
        return "never ran" if status.last_clean is None else "could not start"
    if last.unknown:
        return "exit status unknown"
    if last.signal is not None:
        return f"killed by {last.signal.name}"
    return f"exit code {last.exit_code}"


def summary_line(status: ServiceStatus) -> str:
    """``web: stopped, 2 restarts, killed by SIGTERM: ok`` (or ``: FAILED``)."""
    state = str(status.state)
    if status.state is ServiceState.FATAL and status.message:
        state += f" ({status.message})"
    restarts = f"{status.restarts} restart{'' if status.restarts == 1 else 's'}"
    verdict = "FAILED" if failed(status) else "ok"
    return f"{status.name}: {state}, {restarts}, {_last_exit(status)}: {verdict}"


def exit_code(outcome: Outcome, statuses: Mapping[str, ServiceStatus]) -> int:
    """The exit code of ``aioproc run`` (see the module docstring)."""
    if not outcome.ok:
        return outcome.exit_code
    for status in statuses.values():
        if failed(status):
            code = Outcome(ok=False, service=status.name, status=status.last_status).exit_code
            return code or 1
    return 0

"""A process that records every signal sent to it: the victim a stray signal would hit.

    python canary.py                 be the canary
    python canary.py --orphan-at PID start a canary with PID number PID, then exit

As the canary it blocks every signal (so a signal sent to it stays pending instead
of acting), writes ``ready PID`` on stdout, reads stdin to EOF, then writes the
signals pending on it as a JSON list and exits 0. SIGKILL and SIGSTOP cannot be
blocked: a SIGKILL shows as the canary's death (no JSON line, killed status), a
SIGSTOP as state ``T`` in ``/proc``. So "exited 0 and printed ``[]``" means that
no signal of any kind reached it.

With ``--orphan-at PID`` (inside a PID namespace, as root) it sets
``ns_last_pid`` so that the next process gets PID, starts a canary (sharing this
process's stdin and stdout) and exits at once: the canary is then nobody's child
but the namespace's init, which is how "another program's process got the PID"
looks to the test.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def canary() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    sys.stdout.write(f"ready {os.getpid()}\n")
    sys.stdout.flush()
    while sys.stdin.buffer.read(65536):
        pass
    pending = sorted(int(s) for s in signal.sigpending())
    sys.stdout.write(json.dumps(pending) + "\n")
    sys.stdout.flush()


def orphan_at(pid: int) -> None:
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(pid - 1))
    os.posix_spawn(sys.executable, [sys.executable, os.path.abspath(__file__)], os.environ)
    # Exit without waiting: the canary is reparented to the namespace's init.


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--orphan-at":
        orphan_at(int(sys.argv[2]))
    else:
        canary()

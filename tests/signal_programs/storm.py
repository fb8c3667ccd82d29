"""Child program of ``test_storm``: a burst of signals at the parent, then one last signal.

    python storm.py PPID COUNT OTHER

Sends COUNT signals to PPID, every fifth one signal number OTHER and the rest SIGUSR1,
yielding the CPU after each; then writes ``burst\\n`` to stdout, waits for a line on
stdin, sends one final SIGUSR1 and exits.
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    ppid, count, other = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    kill = os.kill
    usr1 = signal.SIGUSR1
    yield_cpu = os.sched_yield
    for i in range(count):
        kill(ppid, other if i % 5 == 0 else usr1)
        # Let the parent run between kills even when it shares our CPU: otherwise the
        # whole burst fits in one time slice and coalesces into a couple of deliveries.
        yield_cpu()
    sys.stdout.write("burst\n")
    sys.stdout.flush()
    sys.stdin.readline()
    kill(ppid, usr1)


if __name__ == "__main__":
    main()

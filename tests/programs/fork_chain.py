"""A process that keeps forking (bounded): what ``aioproc init``'s sweep must not miss.

Deaf to SIGTERM. Each generation forks the next and exits at once, so the live
process keeps changing PID (a scan of /proc finds one that is gone a moment
later); now and then a generation also leaves a ``sleep 300`` behind, as a real
leak would. Bounded: after LIMIT generations or SECONDS seconds the last one
becomes ``sleep 300`` itself. Prints "running" once it is deaf to SIGTERM.

    python fork_chain.py [LIMIT] [SECONDS] [PAUSE]
"""

import os
import signal
import sys
import time

limit = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("running", flush=True)
end = time.monotonic() + seconds
for generation in range(limit):
    if time.monotonic() > end:
        break
    if generation % 500 == 499 and os.fork() == 0:
        os.execvp("sleep", ["sleep", "300"])
    if os.fork():
        os._exit(0)  # the parent leaves; its child carries on, re-parented
    if pause:
        time.sleep(pause)
os.execvp("sleep", ["sleep", "300"])

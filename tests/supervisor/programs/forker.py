"""Fork a small tree, most of it deaf to SIGTERM; print "pids P1 P2 ..."; wait.

forker (the group leader; exits on SIGTERM)
├── child that exits on SIGTERM
├── child that ignores SIGTERM
│   └── grandchild that ignores SIGTERM
└── (a child that exits at once, leaving) an orphan that ignores SIGTERM

With the argument "exit" the leader exits once the tree is up, leaving it behind.
"""

import os
import signal
import sys
import time
from collections.abc import Callable

r, w = os.pipe()


def spawn(ignore_term: bool, then: Callable[[], object] | None = None) -> int:
    pid = os.fork()
    if pid == 0:
        if ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if then is not None:
            then()
        os.write(w, f"{os.getpid()} ".encode())
        os.close(w)
        os.close(r)
        while True:
            time.sleep(3600)
    return pid


spawn(False)
spawn(True, then=lambda: spawn(True))
middle = os.fork()
if middle == 0:
    spawn(True)
    os._exit(0)  # its child is re-parented: an orphan, still in our process group
os.waitpid(middle, 0)
os.close(w)
data = b""
while chunk := os.read(r, 4096):  # EOF once every process wrote its PID
    data += chunk
print("pids", *(x.decode() for x in data.split()), flush=True)
if sys.argv[1:] == ["exit"]:
    sys.exit(0)
while True:
    time.sleep(3600)

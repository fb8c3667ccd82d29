"""An sd_notify service that runs a script given as arguments: each argument is a
message to send (``KEY=VALUE``, several joined by ``;``), or ``sleep:SECONDS``, or
``print:TEXT``; then it sleeps."""

import os
import socket
import sys
import time

addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for step in sys.argv[1:]:
    if step.startswith("sleep:"):
        time.sleep(float(step[6:]))
    elif step.startswith("print:"):
        print(step[6:], flush=True)
    else:
        sock.sendto(step.replace(";", "\n").encode(), addr)
time.sleep(3600)

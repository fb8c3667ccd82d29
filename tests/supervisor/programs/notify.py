"""An sd_notify service: STATUS=, READY=1, then WATCHDOG=1 every PING seconds (0: never)."""

import os
import socket
import sys
import time

ping = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.sendto(b"STATUS=warming up", addr)
sock.sendto(b"READY=1\nSTATUS=serving", addr)
print("notified", flush=True)
while True:
    if ping:
        time.sleep(ping)
        sock.sendto(b"WATCHDOG=1", addr)
    else:
        time.sleep(3600)

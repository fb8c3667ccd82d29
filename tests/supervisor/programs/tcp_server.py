"""Listen on 127.0.0.1:PORT after DELAY seconds; print "listening"; serve until killed."""

import socket
import sys
import time

port = int(sys.argv[1])
delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
time.sleep(delay)  # the service being slow to start is the point of the test
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(16)
print("listening", flush=True)
while True:
    conn, _ = srv.accept()
    conn.close()

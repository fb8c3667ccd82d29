"""Serve HTTP on 127.0.0.1:PORT: /health answers 200 once READY_AFTER requests were made.

With HANG_AFTER, the requests to /health after the first HANG_AFTER ones are never
answered (each is logged, then its thread waits forever): a hung service whose
port still accepts connections.
"""

import http.server
import sys
import threading

port = int(sys.argv[1])
ready_after = int(sys.argv[2]) if len(sys.argv) > 2 else 0
hang_after = int(sys.argv[3]) if len(sys.argv) > 3 else None
seen = 0
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        global seen
        with lock:
            seen += 1
            count = seen
        if hang_after is not None and self.path == "/health" and count > hang_after:
            print(f"GET {self.path} -> hang", flush=True)
            threading.Event().wait()
        code = 200 if self.path == "/health" and count > ready_after else 503
        print(f"GET {self.path} -> {code}", flush=True)  # before the answer: no race
        body = b"status: ok\n" if code == 200 else b"status: starting\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


server_class = http.server.HTTPServer if hang_after is None else http.server.ThreadingHTTPServer
server_class(("127.0.0.1", port), Handler).serve_forever()

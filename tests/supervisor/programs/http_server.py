"""Serve HTTP on 127.0.0.1:PORT: /health answers 200 once READY_AFTER requests were made."""

import http.server
import sys

port = int(sys.argv[1])
ready_after = int(sys.argv[2]) if len(sys.argv) > 2 else 0
seen = 0


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        global seen
        seen += 1
        code = 200 if self.path == "/health" and seen > ready_after else 503
        print(f"GET {self.path} -> {code}", flush=True)  # before the answer: no race
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()

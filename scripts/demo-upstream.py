"""A demo upstream for scripts/demo.sh: answers every request with what it received
(method, path, headers) as JSON, so you can see what Sluis let through and injected.
Standard library only. Usage: python3 scripts/demo-upstream.py [PORT]
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    def answer(self):
        body = json.dumps(
            {"method": self.command, "path": self.path, "headers": dict(self.headers.items())},
            indent=2,
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = answer

    def log_message(self, *args):
        pass


port = int(sys.argv[1]) if len(sys.argv) > 1 else 8081
ThreadingHTTPServer(("127.0.0.1", port), Echo).serve_forever()

"""A webhook receiver for the portal's browser tests, on 127.0.0.1 only.

POST /ok answers 200. POST /flaky answers 500 with a hostile HTML body (a script tag and an onerror image)
until GET /heal, then 200. GET /received lists what arrived (path and delivery id), as JSON.
Prints its port on the first line of stdout.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOSTILE = b'<script>window.__pwned = 1; alert("pwned")</script><img src=x onerror="window.__pwned = 2">'

state = {"healed": False, "received": []}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body, content_type="text/html"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        with lock:
            state["received"].append({"path": self.path, "delivery_id": body.get("delivery_id")})
            healed = state["healed"]
        if self.path == "/flaky" and not healed:
            self.answer(500, HOSTILE)
        else:
            self.answer(200, b'{"status": "received"}', "application/json")

    def do_GET(self):
        if self.path == "/heal":
            with lock:
                state["healed"] = True
            self.answer(200, b"healed", "text/plain")
        elif self.path == "/received":
            with lock:
                body = json.dumps(state["received"]).encode()
            self.answer(200, body, "application/json")
        else:
            self.answer(404, b"", "text/plain")


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()

"""A webhook receiver for trying Courier locally: verifies every request with the integration guide's own
`verify_signature` and prints the event.

Usage: WEBHOOK_SECRET=whsec_... python3 examples/receiver.py [port]   (default port 9000)
"""
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

WEBHOOK_SECRET = os.environ["WEBHOOK_SECRET"]


# Unchanged from the integration guide.
def verify_signature(payload: bytes, signature_header: str) -> bool:
    """Verify webhook signature."""
    try:
        parts = dict(p.split("=") for p in signature_header.split(","))
        timestamp = int(parts["t"])
        signature = parts["v1"]
    except (KeyError, ValueError):
        return False

    # Reject old timestamps (prevent replay attacks)
    if abs(time.time() - timestamp) > 300:  # 5 minute tolerance
        return False

    # Compute expected signature
    signed_payload = f"{timestamp}.{payload.decode()}"
    expected = hmac.new(
        WEBHOOK_SECRET.encode(),
        signed_payload.encode(),
        hashlib.sha256,
    ).hexdigest()

    return hmac.compare_digest(signature, expected)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not verify_signature(body, self.headers.get("X-Webhook-Signature", "")):
            print("REJECTED: invalid signature", flush=True)
            self.send_response(401)
            self.end_headers()
            return
        envelope = json.loads(body)
        event = envelope["event"]
        print(f"verified {event['type']} {event['id']} call={event['data']['call_id']} "
              f"attempt {envelope['attempt']}/{envelope['max_attempts']} delivery={envelope['delivery_id']}", flush=True)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "received"}')

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    print(f"listening on http://127.0.0.1:{port}/webhooks/agent-studio", flush=True)
    HTTPServer(("127.0.0.1", port), Handler).serve_forever()

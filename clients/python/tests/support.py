"""What the tests run against: a real `courier serve`, tenants and keys made with its CLI, a receiver that checks
every request with the integration guide's own `verify_signature`, and a fault-injecting HTTP proxy.

scripts/client-tests.sh provides `COURIER` (the binary) and `DATABASE_URL` (a fresh database on the embedded
cluster, migrated).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import courier_client

REPO = Path(__file__).resolve().parents[3]
ALL_SCOPES = "webhooks:read,webhooks:write,events:write,deliveries:read,deliveries:replay"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> T:
    """Poll `check` until it returns something truthy; fail the test past `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")
        time.sleep(interval)


def serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    """An HTTP server on a free port of 127.0.0.1, answering on its own threads; and its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# --- the server ---


class Server:
    """One `courier serve` process on a fixed port, which can be killed and started again on it."""

    def __init__(self, log_path: Path, extra_env: dict[str, str] | None = None) -> None:
        self.binary = os.environ["COURIER"]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **os.environ,
            "COURIER_LISTEN": f"127.0.0.1:{self.port}",
            "COURIER_PUBLIC_URL": self.url,
            "COURIER_METRICS_LISTEN": "",
            "COURIER_RATE_LIMIT": "0",
            "COURIER_ALLOW_HTTP": "true",
            "COURIER_ALLOWED_TARGETS": "127.0.0.0/8",
            "COURIER_RETRY_INITIAL": "200ms",
            "COURIER_POLL_INTERVAL": "200ms",
            "COURIER_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
            "COURIER_LOG_FORMAT": "json",
            "RUST_LOG": "warn",
            **(extra_env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([self.binary, "serve"], env=self.env, stdout=log, stderr=log)
        log.close()

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"courier serve exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as answer:
                    return bool(answer.status == 200)
            except OSError:
                return False

        wait_until(ready, timeout=60, what="courier serve to be ready")

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye; what was in flight is cut off."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def cli(*args: str) -> Any:
    """The courier CLI with `--json`, on the test database."""
    out = subprocess.run([os.environ["COURIER"], *args, "--json"], check=True, capture_output=True).stdout
    return json.loads(out)


def new_key(scopes: str = ALL_SCOPES, env: str = "test") -> str:
    """A key of a new tenant, so each test sees only its own events and deliveries."""
    tenant = cli("tenants", "create", "--name", f"client test {os.urandom(3).hex()}")["id"]
    key: str = cli("keys", "create", "--tenant", tenant, "--env", env, "--scopes", scopes)["key"]
    return key


def psql(sql: str) -> str:
    """One query's result as psql prints it unaligned (for facts the API does not show, like trace parents)."""
    return subprocess.run(
        ["psql", "-At", os.environ["DATABASE_URL"], "-c", sql], check=True, capture_output=True, text=True
    ).stdout.strip()


# --- the receiver ---


@functools.cache
def guide_verifier(secret: str) -> Callable[[bytes, str], bool]:
    """The integration guide's `verify_signature`, from the repository's verbatim copy, bound to `secret`."""
    source = (REPO / "tests/fixtures/guide_verify_signature.py").read_text()
    code = re.search(r"# --- verbatim from .*?\n(.*)# --- end of the guide's code", source, re.S)
    assert code is not None, "the guide's function was not found between its markers"
    namespace: dict[str, Any] = {"hmac": hmac, "hashlib": hashlib, "time": time, "WEBHOOK_SECRET": secret}
    exec(code.group(1), namespace)
    verify: Callable[[bytes, str], bool] = namespace["verify_signature"]
    return verify


@dataclass
class Received:
    path: str
    body: bytes
    headers: dict[str, str]
    guide_ok: bool
    client_ok: bool

    @property
    def envelope(self) -> Any:
        return json.loads(self.body)

    @property
    def event_id(self) -> str:
        event_id: str = self.envelope["event"]["id"]
        return event_id


@dataclass
class Endpoint:
    secrets: list[str]
    status: int = 200


class Receiver:
    """A real HTTP receiver: each path has its secrets (and a status to answer); every request is checked with the
    guide's `verify_signature` and with `courier_client.verify`, and kept."""

    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        self.received: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                endpoint = receiver.endpoints.get(self.path, Endpoint([]))
                signature = headers.get("x-webhook-signature", "")
                guide_ok = any(guide_verifier(secret)(body, signature) for secret in endpoint.secrets)
                try:
                    courier_client.verify(body, headers, endpoint.secrets or ["whsec_"])
                    client_ok = True
                except courier_client.SignatureError:
                    client_ok = False
                with receiver.lock:
                    receiver.received.append(Received(self.path, body, headers, guide_ok, client_ok))
                status = endpoint.status if guide_ok else 401
                answer = b'{"status": "received"}'
                self.send_response(status)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                pass

        self.server, self.url = serve(Handler)

    def endpoint(self, secret: str, status: int = 200) -> str:
        """A new path answering `status`; returns its URL. Add secrets with `add_secret`."""
        path = f"/hooks/{os.urandom(6).hex()}"
        self.endpoints[path] = Endpoint([secret] if secret else [], status)
        return self.url + path

    def add_secret(self, url: str, secret: str) -> None:
        self.endpoints[url.removeprefix(self.url)].secrets.append(secret)

    def at(self, url: str) -> list[Received]:
        path = url.removeprefix(self.url)
        with self.lock:
            return [r for r in self.received if r.path == path]

    def wait_for(self, url: str, count: int, timeout: float = 30.0) -> list[Received]:
        def enough() -> list[Received] | None:
            got = self.at(url)
            return got if len(got) >= count else None

        return wait_until(enough, timeout, what=f"{count} deliveries at {url}")

    def close(self) -> None:
        self.server.shutdown()


# --- the fault proxy ---


@dataclass
class Seen:
    """One request the proxy saw: when, what, and what it did with it."""

    at: float
    method: str
    path: str
    body: bytes
    action: str


@dataclass
class FaultProxy:
    """An HTTP/1.1 proxy in front of the server that follows a plan, one action per matching request:
    - `forward`: pass it on and pass the answer back;
    - `drop`: pass it on, wait for the server's whole answer (so the server has committed), then close the client's
      connection without a byte of it;
    - `delay:<seconds>`: pass it on, then hold the answer that long (past a client's timeout);
    - `<status>` or `<status>:<retry-after>`: answer that status itself, never passing it on.
    Requests past the plan, and those whose path does not start with `only`, are forwarded.
    """

    upstream: str
    plan: list[str] = field(default_factory=list)
    only: str = "/api/v1/events"
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        proxy = self
        host, port = self.upstream.removeprefix("http://").split(":")
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with proxy.lock:
                    matches = self.path.startswith(proxy.only)
                    action = proxy.plan.pop(0) if matches and proxy.plan else "forward"
                    proxy.seen.append(Seen(time.monotonic(), self.command, self.path, body, action))
                if action[0].isdigit():
                    status, _, retry_after = action.partition(":")
                    answer = json.dumps({"error": {"code": "injected", "message": action, "details": []}}).encode()
                    self.send_response(int(status))
                    if retry_after:
                        self.send_header("retry-after", retry_after)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                import http.client

                upstream = http.client.HTTPConnection(host, int(port), timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                answer = response.read()
                upstream.close()
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action.startswith("delay:"):
                    time.sleep(float(action.partition(":")[2]))
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "content-length", "date", "server"):
                        self.send_header(name, value)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PATCH = do_DELETE = _any

            def log_message(self, *_: Any) -> None:
                pass

        self.server, self.url = serve(Handler)

    def matching(self) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.path.startswith(self.only)]

    def gaps(self) -> list[float]:
        """Seconds between consecutive matching requests."""
        times = [s.at for s in self.matching()]
        return [b - a for a, b in itertools.pairwise(times)]

    def close(self) -> None:
        self.server.shutdown()

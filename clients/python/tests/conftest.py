"""Fixtures: one `courier serve` and one receiver for the session, a fresh tenant per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from courier_client import Courier, RetryPolicy

from .support import FaultProxy, Receiver, Server, new_key, serve

LOGS = Path(os.environ.get("CLIENT_TEST_LOGS", "/tmp"))


class _OtlpSink(BaseHTTPRequestHandler):
    """Takes the server's OTLP exports and drops them: the server records trace context only while exporting."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    sink, endpoint = serve(_OtlpSink)
    process = Server(
        LOGS / "client-serve.log", {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "RUST_LOG": "warn,courier=info"}
    )
    process.start()
    yield process
    process.stop()
    sink.shutdown()


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def api_key(server: Server) -> str:
    return new_key()


#: Retries fast enough for tests; jitter pinned to its ceiling so waits are exact.
FAST = RetryPolicy(max_retries=5, initial_backoff=0.05, max_backoff=0.4, deadline=20.0, jitter=lambda: 1.0)


@pytest.fixture
def client(server: Server, api_key: str) -> Iterator[Courier]:
    with Courier(server.url, api_key, retry=FAST) as client:
        yield client


@pytest.fixture
def proxy(server: Server) -> Iterator[FaultProxy]:
    proxy = FaultProxy(server.url)
    yield proxy
    proxy.close()

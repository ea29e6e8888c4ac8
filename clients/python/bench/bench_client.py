"""Events/s into a real `courier serve`: raw httpx beside the client's `send`, `send_batch` and `BackgroundSender`.

Starts its own `courier serve` on a fresh database of the embedded cluster (as the tests do), with no webhooks, so
it measures ingest: what the emitter sees. Run from clients/python with the client's virtual environment:

    COURIER=../../target/release/courier ../../.courier/tools/client-venv/bin/python -m bench.bench_client

The embedded cluster is the repository's (`courier db start` in its root).

Prints one table; `--events N` sets the batch scenarios' size, `--singles N` the one-at-a-time ones'.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from courier_client import BackgroundSender, Courier, events, new_event_id
from tests.support import REPO, Server, new_key


def fresh_database() -> tuple[str, Callable[[], None]]:
    courier = str(Path(os.environ["COURIER"]).resolve())
    # The embedded cluster lives in the repository's .courier/, so ask from there.
    cluster = subprocess.run(
        [courier, "db", "start"], check=True, capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    base = cluster.rsplit("/", 1)[0]
    name = f"courier_client_bench_{os.getpid()}"
    subprocess.run(["psql", "-q", f"{base}/postgres", "-c", f"CREATE DATABASE {name}"], check=True)
    url = f"{base}/{name}"
    subprocess.run([courier, "migrate"], check=True, capture_output=True, env={**os.environ, "DATABASE_URL": url})

    def drop() -> None:
        sql = f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        subprocess.run(["psql", "-q", f"{base}/postgres", "-c", sql], check=False, capture_output=True)

    return url, drop


def event_body(i: int) -> dict[str, object]:
    """The same event the client scenarios send, built by hand as an emitter without the client would."""
    data = {"call_id": f"bench-{i}", "user_id": "u-1", "status": "completed", "duration_seconds": 180}
    return {"type": "call.completed", "data": data}


def raw_batches(url: str, key: str, n: int) -> float:
    """The floor: 1,000-event bodies built and posted with one httpx.Client, no retries, no per-item results."""
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        started = time.perf_counter()
        for start in range(0, n, 1000):
            chunk = [{**event_body(i), "id": new_event_id()} for i in range(start, min(n, start + 1000))]
            body = json.dumps({"events": chunk}, separators=(",", ":")).encode()
            http.post("/api/v1/events/batch", content=body).raise_for_status()
        return time.perf_counter() - started


def raw_singles(url: str, key: str, n: int) -> float:
    headers = {"authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        started = time.perf_counter()
        for i in range(n):
            http.post("/api/v1/events", json={**event_body(i), "id": new_event_id()}).raise_for_status()
        return time.perf_counter() - started


def client_singles(url: str, key: str, n: int) -> float:
    with Courier(url, key) as client:
        started = time.perf_counter()
        for i in range(n):
            client.send_event(events.call_completed(call_id=f"bench-{i}", user_id="u-1", duration_seconds=180))
        return time.perf_counter() - started


def client_batch(url: str, key: str, n: int) -> float:
    with Courier(url, key) as client:
        started = time.perf_counter()  # building the events is part of the client's cost
        batch = [events.call_completed(call_id=f"bench-{i}", user_id="u-1", duration_seconds=180) for i in range(n)]
        results = client.send_batch(batch)
        took = time.perf_counter() - started
    assert all(r.ok for r in results)
    return took


def background(url: str, key: str, n: int, threads: int = 8) -> float:
    with Courier(url, key) as client:
        sender = BackgroundSender(client, max_batch=1000, flush_interval=0.05, max_queue=20_000)

        def emit(part: int) -> None:
            for i in range(part, n, threads):
                sender.submit(events.call_completed(call_id=f"bench-{i}", user_id="u-1", duration_seconds=180))

        started = time.perf_counter()
        workers = [threading.Thread(target=emit, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        report = sender.flush()
        took = time.perf_counter() - started
        sender.close()
    assert report.sent == n and not report.failed
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--singles", type=int, default=2_000)
    args = parser.parse_args()

    database_url, drop = fresh_database()
    os.environ["DATABASE_URL"] = database_url
    server = Server(Path("/tmp/courier-client-bench-serve.log"), {"RUST_LOG": "error"})
    server.start()
    try:
        scenarios: list[tuple[str, int, Callable[[str, str, int], float]]] = [
            ("raw httpx, POST /events one at a time", args.singles, raw_singles),
            ("Courier.send_event one at a time", args.singles, client_singles),
            ("raw httpx, POST /events/batch of 1,000", args.events, raw_batches),
            ("Courier.send_batch (chunks of 1,000)", args.events, client_batch),
            ("BackgroundSender, 8 threads submitting", args.events, background),
        ]
        print(f"{'scenario':<42} {'events':>8} {'seconds':>8} {'events/s':>9}")
        for name, n, run in scenarios:
            took = run(server.url, new_key(), n)
            print(f"{name:<42} {n:>8,} {took:>8.2f} {n / took:>9,.0f}", flush=True)
    finally:
        server.stop()
        drop()


if __name__ == "__main__":
    main()

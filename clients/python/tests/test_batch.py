"""`send_batch`: chunks of at most 1,000 events and 16 MiB, results in input order, per-item errors, and only whole
failed chunks retried."""

from __future__ import annotations

import json

from courier_client import ConflictError, Courier, Event, RetryPolicy, ServerError, ValidationError, events

from .conftest import FAST
from .support import FaultProxy


def stored_ids(client: Courier) -> list[str]:
    return [e.id for e in client.events.iter()]


def chunk_sizes(proxy: FaultProxy) -> list[int]:
    return [len(json.loads(s.body)["events"]) for s in proxy.matching()]


def test_2500_events_go_in_three_requests_with_results_in_order(proxy: FaultProxy, api_key: str) -> None:
    with Courier(proxy.url, api_key, retry=FAST) as client:
        taken = client.send("call.started", {"call_id": "taken"})
        batch: list[Event] = [events.call_started(call_id=f"b-{i}") for i in range(2500)]
        batch[5] = Event("call.unknown", {"call_id": "b-5"})
        batch[1500] = Event("call.started", {"user_id": "no call id"})
        batch[2499] = Event("call.started", {"call_id": "another body"}, id=taken.id)
        proxy.seen.clear()

        results = client.send_batch(batch)

        assert chunk_sizes(proxy) == [1000, 1000, 500]
        assert [r.index for r in results] == list(range(2500))
        assert [r.id for r in results] == [e.id for e in batch]  # each input got its id before the first request
        bad = {r.index: r.error for r in results if not r.ok}
        assert set(bad) == {5, 1500, 2499}
        assert isinstance(bad[5], ValidationError) and bad[5].details[0].field == "events[5].type"
        assert isinstance(bad[1500], ValidationError) and bad[1500].details[0].field == "events[500].data.call_id"
        assert isinstance(bad[2499], ConflictError)
        assert not any(r.retryable for r in results)
        assert all(r.deliveries == 0 for r in results if r.ok)
        stored = stored_ids(client)
        assert len(stored) == len(set(stored)) == 2498
        assert set(stored) == {r.id for r in results if r.ok} | {taken.id}


def test_only_whole_chunks_that_failed_are_retried_and_each_event_is_stored_once(
    proxy: FaultProxy, api_key: str
) -> None:
    with Courier(proxy.url, api_key, retry=FAST) as client:
        batch = [events.call_started(call_id=f"r-{i}") for i in range(1200)]
        proxy.plan = ["forward", "drop", "503:1"]  # the second chunk: committed then cut off, then refused once

        results = client.send_batch(batch)

        assert all(r.ok for r in results)
        firsts = [json.loads(s.body)["events"][0]["id"] for s in proxy.matching()]
        assert firsts == [batch[0].id, batch[1000].id, batch[1000].id, batch[1000].id]
        assert proxy.gaps()[2] >= 1.0  # Retry-After honoured
        stored = stored_ids(client)
        assert len(stored) == 1200 and set(stored) == {e.id for e in batch}


def test_a_chunk_that_keeps_failing_marks_its_items_and_can_be_sent_again(proxy: FaultProxy, api_key: str) -> None:
    policy = RetryPolicy(max_retries=2, initial_backoff=0.01, jitter=lambda: 1.0)
    with Courier(proxy.url, api_key, retry=policy) as client:
        batch = [events.call_connected(call_id=f"k-{i}") for i in range(1500)]
        proxy.plan = ["forward", "500", "502", "500"]

        results = client.send_batch(batch)

        assert all(r.ok for r in results[:1000])
        failed = results[1000:]
        assert all(isinstance(r.error, ServerError) and r.retryable for r in failed)
        assert len(proxy.matching()) == 4  # one try of the first chunk, three of the second
        again = client.send_batch(batch[1000:])  # the same Event objects keep their ids
        assert all(r.ok for r in again)
        stored = stored_ids(client)
        assert len(stored) == 1500 and set(stored) == {e.id for e in batch}


def test_chunks_stay_under_the_body_limit(client: Courier, api_key: str, proxy: FaultProxy) -> None:
    blob = "x" * (250 * 1024)  # just under the 256 KiB a single event's data may hold
    batch = [events.call_completed(call_id=f"big-{i}", notes=blob) for i in range(70)]  # 17.5 MB in all
    with Courier(proxy.url, api_key, retry=FAST) as through:
        results = through.send_batch(batch)
    assert all(r.ok for r in results)
    sizes = [len(s.body) for s in proxy.matching()]
    assert len(sizes) == 2 and all(size < 16 * 1024 * 1024 for size in sizes) and sum(sizes) > 17_000_000
    assert client.events.get(batch[69].id or "").data["notes"] == blob

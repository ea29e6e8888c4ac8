"""The retry policy under faults a proxy injects between the client and a real server: answers lost after the
server committed, 503 and 429 with Retry-After, 5xx, timeouts, a deadline, and what is never retried."""

from __future__ import annotations

import time

import pytest

from courier_client import (
    ConflictError,
    Courier,
    RateLimitError,
    RetryPolicy,
    ServerError,
    TransportError,
    ValidationError,
    events,
)

from .conftest import FAST
from .support import FaultProxy, Receiver, free_port, wait_until


def receiving(client: Courier, receiver: Receiver) -> str:
    url = receiver.endpoint("")
    hook = client.webhooks.create(url=url)
    assert hook.secret is not None
    receiver.add_secret(url, hook.secret)
    return url


def stored_once_and_delivered(client: Courier, receiver: Receiver, url: str, event_id: str) -> None:
    """The event is stored once, fanned out once, delivered and verified exactly once."""
    assert [e.id for e in client.events.iter()].count(event_id) == 1
    record = client.events.get(event_id)
    assert record.deliveries is not None and len(record.deliveries) == 1

    def succeeded() -> bool:
        return client.deliveries.get(record.deliveries[0].id).status == "succeeded"  # type: ignore[index]

    wait_until(succeeded, what="the delivery to succeed")
    got = [r for r in receiver.at(url) if r.event_id == event_id]
    assert len(got) == 1 and got[0].guide_ok


def test_an_answer_lost_after_commit_is_retried_with_the_same_id(
    proxy: FaultProxy, api_key: str, receiver: Receiver
) -> None:
    with Courier(proxy.url, api_key, retry=FAST) as client:
        url = receiving(client, receiver)
        proxy.plan = ["drop"]
        accepted = client.send_event(events.call_completed(call_id="lost-1", duration_seconds=3))
        assert accepted.tries == 2 and accepted.first_time  # the retry was a repeat of this call's own first try
        bodies = [s.body for s in proxy.matching()]
        assert len(bodies) == 2 and bodies[0] == bodies[1]  # the same id, the same bytes
        stored_once_and_delivered(client, receiver, url, accepted.id)


def test_503_and_429_wait_exactly_what_retry_after_says(proxy: FaultProxy, api_key: str, receiver: Receiver) -> None:
    with Courier(proxy.url, api_key, retry=FAST) as client:
        url = receiving(client, receiver)
        proxy.plan = ["503:1", "429:2"]
        accepted = client.send("call.started", {"call_id": "busy-1"})
        assert accepted.tries == 3 and accepted.first_time
        first, second = proxy.gaps()
        assert 1.0 <= first < 2.0 and 2.0 <= second < 3.0  # never early; the slack is for a loaded machine
        stored_once_and_delivered(client, receiver, url, accepted.id)


def test_5xx_backs_off_exponentially_and_408_is_retried(proxy: FaultProxy, api_key: str) -> None:
    policy = RetryPolicy(initial_backoff=0.2, max_backoff=0.5, jitter=lambda: 1.0)
    with Courier(proxy.url, api_key, retry=policy) as client:
        proxy.plan = ["500", "502", "408", "504"]
        accepted = client.send("call.started", {"call_id": "flaky-1"})
        assert accepted.tries == 5
        gaps = proxy.gaps()
        for gap, wait in zip(gaps, [0.2, 0.4, 0.5, 0.5], strict=True):  # doubling, capped at max_backoff
            assert wait <= gap < wait + 0.5
    # Full jitter: each wait is a uniform draw under that ceiling.
    assert RetryPolicy(initial_backoff=1, jitter=lambda: 0.25).backoff(3) == 1.0


def test_the_deadline_stops_retries_and_raises_the_last_error(proxy: FaultProxy, api_key: str) -> None:
    policy = RetryPolicy(max_retries=10, deadline=2.9)
    with Courier(proxy.url, api_key, retry=policy) as client:
        proxy.plan = ["503:1"] * 10
        started = time.monotonic()
        with pytest.raises(ServerError) as error:
            client.send("call.started", {"call_id": "down-1"})
        took = time.monotonic() - started
    assert error.value.status_code == 503 and error.value.retry_after == 1.0
    # Tries at 0, 1 and 2 s (plus their round trips); a fourth would start at 3 s, past the deadline.
    assert error.value.tries == 3 and len(proxy.matching()) == 3
    assert 2.0 <= took < 2.9


def test_max_retries_bounds_the_tries(proxy: FaultProxy, api_key: str) -> None:
    policy = RetryPolicy(max_retries=2, initial_backoff=0.01)
    with Courier(proxy.url, api_key, retry=policy) as client:
        proxy.plan = ["429:0"] * 5
        with pytest.raises(RateLimitError) as error:
            client.send("call.started", {"call_id": "limited-1"})
    assert error.value.tries == 3 and len(proxy.matching()) == 3


@pytest.mark.parametrize(
    ("status", "error"), [("400", ValidationError), ("409", ConflictError), ("422", ValidationError)]
)
def test_other_4xx_are_never_retried(proxy: FaultProxy, api_key: str, status: str, error: type[Exception]) -> None:
    with Courier(proxy.url, api_key, retry=FAST) as client:
        proxy.plan = [status]
        with pytest.raises(error):
            client.send("call.started", {"call_id": "refused-1"})
    assert len(proxy.matching()) == 1


def test_a_timeout_after_commit_is_retried_and_stored_once(proxy: FaultProxy, api_key: str, receiver: Receiver) -> None:
    with Courier(proxy.url, api_key, retry=FAST, timeout=1.0) as client:
        url = receiving(client, receiver)
        proxy.plan = ["delay:2.5"]
        accepted = client.send("call.failed", {"call_id": "slow-1", "status_reason": "timeout"})
        assert accepted.tries == 2 and accepted.first_time
        stored_once_and_delivered(client, receiver, url, accepted.id)


def test_requests_that_are_not_idempotent_retry_only_when_nothing_happened(proxy: FaultProxy, api_key: str) -> None:
    proxy.only = "/api/v1/webhooks"
    with Courier(proxy.url, api_key, retry=FAST) as client:
        proxy.plan = ["429:0"]  # refused by the rate limit before doing anything: safe to try again
        created = client.webhooks.create(url="http://127.0.0.1:9/a")
        assert len(proxy.matching()) == 2
        proxy.plan = ["503:0"]  # a 503 may come from a commit whose outcome is unknown: not tried again
        with pytest.raises(ServerError):
            client.webhooks.create(url="http://127.0.0.1:9/never")
        assert len(proxy.matching()) == 3
        proxy.plan = ["drop"]  # created, answer lost: a retry could create a second webhook, so none is made
        with pytest.raises(TransportError) as lost:
            client.webhooks.create(url="http://127.0.0.1:9/b")
        assert lost.value.tries == 1 and len(proxy.matching()) == 4
        assert sorted(w.url for w in client.webhooks.iter()) == ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"]
        proxy.plan = ["drop"]  # a DELETE whose answer was lost is retried; its 404 then means done
        client.webhooks.delete(created.id)
        assert [w.url for w in client.webhooks.iter()] == ["http://127.0.0.1:9/b"]


def test_a_refused_connection_is_retried_until_the_deadline() -> None:
    policy = RetryPolicy(initial_backoff=0.05, deadline=1.0)
    client = Courier(f"http://127.0.0.1:{free_port()}", "as_test_x", retry=policy)
    with client, pytest.raises(TransportError) as error:
        client.send("call.started", {"call_id": "nobody-home"})
    assert error.value.tries >= 3 and isinstance(error.value.__cause__, Exception)

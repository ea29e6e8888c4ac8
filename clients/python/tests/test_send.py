"""Sending events: ids, idempotency, the typed call events end to end, errors, and trace context."""

from __future__ import annotations

import re

import pytest

from courier_client import (
    AuthenticationError,
    ConflictError,
    Courier,
    Event,
    NotFoundError,
    PermissionError,
    ValidationError,
    events,
)

from .conftest import FAST
from .support import Receiver, Server, new_key, psql

ULID_ID = re.compile(r"^evt_[0-7][0-9A-HJKMNP-TV-Z]{25}$")
REQUEST_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

#: `data` of the integration guide's webhook payload example, as printed there.
GUIDE_COMPLETED_DATA = {
    "call_id": "call-uuid",
    "room_name": "room-abc",
    "workflow_slug": "onboarding",
    "user_id": "user-123",
    "status": "completed",
    "duration_seconds": 180,
    "agent_history": ["greeter", "support"],
    "transcript": [
        {"role": "assistant", "content": "Hello!", "agent": "greeter"},
        {"role": "user", "content": "Hi there"},
    ],
    "metrics": {"duration_seconds": 180, "agent_count": 2, "message_count": 15},
    "metadata": {"source": "kafka"},
}


def test_the_completed_builder_makes_the_guides_payload_field_for_field() -> None:
    event = events.call_completed(
        call_id="call-uuid",
        room_name="room-abc",
        workflow_slug="onboarding",
        user_id="user-123",
        duration_seconds=180,
        agent_history=["greeter", "support"],
        transcript=[
            {"role": "assistant", "content": "Hello!", "agent": "greeter"},
            {"role": "user", "content": "Hi there"},
        ],
        metrics={"duration_seconds": 180, "agent_count": 2, "message_count": 15},
        metadata={"source": "kafka"},
    )
    assert event.type == "call.completed"
    assert list(event.data.items()) == list(GUIDE_COMPLETED_DATA.items())  # same fields, same order
    assert event.id is None


def test_six_call_events_reach_a_receiver_running_the_guides_verify_signature(
    client: Courier, receiver: Receiver
) -> None:
    url = receiver.endpoint("")
    hook = client.webhooks.create(url=url, filter={"include_transcript": True, "include_metrics": True})
    assert hook.secret is not None
    receiver.add_secret(url, hook.secret)
    sent = [
        events.call_started(call_id="c-1", user_id="user-123", workflow_slug="onboarding", room_name="room-abc"),
        events.call_connected(call_id="c-1", user_id="user-123", agent_history=["greeter"]),
        events.call_agent_changed(call_id="c-1", agent_history=["greeter", "support"]),
        events.call_disconnected(call_id="c-2", status_reason="network", duration_seconds=12),
        events.call_failed(call_id="c-3", user_id="user-9", status_reason="no_answer"),
        events.call_completed(call_id="c-1", user_id="user-123", duration_seconds=180, custom={"a": 1}),
    ]
    accepted = [client.send_event(event) for event in sent]
    assert all(a.first_time and a.deliveries == 1 and ULID_ID.match(a.id) for a in accepted)

    got = {r.event_id: r for r in receiver.wait_for(url, len(sent))}
    assert set(got) == {a.id for a in accepted}
    for event, answer in zip(sent, accepted, strict=True):
        request = got[answer.id]
        assert request.guide_ok, "the guide's verify_signature refused Courier's request"
        assert request.client_ok, "courier_client.verify refused Courier's request"
        assert request.envelope["event"]["type"] == event.type
        assert request.envelope["event"]["data"] == event.data
    assert got[accepted[4].id].envelope["event"]["data"]["status_reason"] == "no_answer"
    assert got[accepted[5].id].envelope["event"]["data"]["custom"] == {"a": 1}


def test_an_id_is_made_once_and_a_repeat_is_told_from_a_new_event(client: Courier) -> None:
    first = client.send("call.started", {"call_id": "c-1"})
    assert ULID_ID.match(first.id) and first.first_time and first.tries == 1
    again = client.send("call.started", {"call_id": "c-1"}, id=first.id)
    assert again.id == first.id and not again.first_time
    with pytest.raises(ConflictError) as conflict:
        client.send("call.started", {"call_id": "c-other"}, id=first.id)
    assert conflict.value.status_code == 409 and conflict.value.tries == 1
    assert "already used" in conflict.value.message
    assert conflict.value.request_id and REQUEST_ID.match(conflict.value.request_id)
    # The same Event object keeps the id it was given at its first send.
    event = Event("call.connected", {"call_id": "c-2"}, id="evt_fixed-id_1", created=1705680000)
    assert client.send_event(event).first_time
    assert client.events.get("evt_fixed-id_1").created == 1705680000


def test_errors_carry_code_details_and_request_id_and_are_not_retried(server: Server, client: Courier) -> None:
    with pytest.raises(ValidationError) as invalid:
        client.send("call.unknown", {"user_id": "no call id"})
    fields = {d.field for d in invalid.value.details}
    assert fields == {"type", "data.call_id"}
    assert invalid.value.status_code == 422 and invalid.value.code == "validation_failed"
    assert invalid.value.tries == 1 and invalid.value.request_id

    with Courier(server.url, "as_test_not-a-real-key", retry=FAST) as stranger, pytest.raises(AuthenticationError) as e:
        stranger.send("call.started", {"call_id": "c"})
    assert e.value.status_code == 401 and e.value.tries == 1 and e.value.request_id

    with Courier(server.url, new_key("webhooks:read"), retry=FAST) as reader, pytest.raises(PermissionError) as denied:
        reader.send("call.started", {"call_id": "c"})
    assert "events:write" in denied.value.message and denied.value.request_id
    assert not isinstance(denied.value, OSError)  # not the built-in of the same name

    with pytest.raises(NotFoundError) as missing:
        client.webhooks.get("wh_01M8XM9XDZEJQSMWHJ0T6P35JS")
    assert missing.value.status_code == 404 and missing.value.request_id


def test_traceparent_given_or_from_opentelemetry_reaches_the_delivery(client: Courier, receiver: Receiver) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    url = receiver.endpoint("")
    hook = client.webhooks.create(url=url)
    assert hook.secret is not None
    receiver.add_secret(url, hook.secret)

    explicit_trace = "0af7651916cd43dd8448eb211c80319c"
    given = client.send("call.started", {"call_id": "t-1"}, traceparent=f"00-{explicit_trace}-b7ad6b7169203331-01")

    otel_trace = 0x4BF92F3577B34DA6A3CE929D0E0E4736
    context = SpanContext(otel_trace, 0x00F067AA0BA902B7, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    with trace.use_span(NonRecordingSpan(context)):
        current = client.send("call.started", {"call_id": "t-2"})
    untraced = client.send("call.started", {"call_id": "t-3"})

    def stored(event_id: str) -> str:
        return psql(f"SELECT coalesce(trace_parent, '') FROM deliveries WHERE event_id = '{event_id}'")

    assert stored(given.id).startswith(f"00-{explicit_trace}-")
    assert stored(current.id).startswith(f"00-{otel_trace:032x}-")
    assert explicit_trace not in stored(untraced.id) and f"{otel_trace:032x}" not in stored(untraced.id)

"""Events to send, and typed builders for the integration guide's six call events.

Each builder returns an `Event` whose `data` has exactly the guide's field names, in the guide's order, with the
fields you leave out (`None`) absent; anything else you pass as a keyword goes into `data` unchanged. Send it with
`client.send_event(...)`, put it in `client.send_batch([...])`, or hand it to a `BackgroundSender`.

    client.send_event(call_completed(call_id="call-uuid", user_id="user-123", duration_seconds=180))
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

__all__ = [
    "EVENT_TYPES",
    "CallMetrics",
    "Event",
    "EventType",
    "TranscriptEntry",
    "call_agent_changed",
    "call_completed",
    "call_connected",
    "call_disconnected",
    "call_failed",
    "call_started",
    "new_event_id",
]

EventType = Literal[
    "call.started", "call.connected", "call.completed", "call.failed", "call.disconnected", "call.agent.changed"
]
#: The types Courier accepts from an emitter; any other is refused with 422.
EVENT_TYPES: tuple[str, ...] = (
    "call.started",
    "call.connected",
    "call.completed",
    "call.failed",
    "call.disconnected",
    "call.agent.changed",
)

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_event_id() -> str:
    """`evt_` + a ULID: 48 bits of milliseconds and 80 random bits, so ids sort by creation time."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "evt_" + "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


@dataclass
class Event:
    """One event as the emitter posts it. `id` is filled in (once) by the client that first sends it."""

    type: str
    data: dict[str, Any]
    id: str | None = None
    #: Unix seconds; the time of ingest when `None`.
    created: int | None = None

    def with_id(self) -> Event:
        """This event, given a new id first if it has none; the id stays, so sending it again is idempotent."""
        if self.id is None:
            self.id = new_event_id()
        return self

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "data": self.data}
        if self.id is not None:
            body["id"] = self.id
        if self.created is not None:
            body["created"] = self.created
        return body

    @classmethod
    def coerce(cls, value: Event | Mapping[str, Any]) -> Event:
        """An `Event` from itself or from a mapping shaped like `POST /api/v1/events`' body."""
        if isinstance(value, Event):
            return value
        return cls(
            type=str(value["type"]),
            data=dict(value["data"]),
            id=value.get("id"),
            created=value.get("created"),
        )


class _TranscriptRequired(TypedDict):
    role: str
    content: str


class TranscriptEntry(_TranscriptRequired, total=False):
    """`{"role": "assistant", "content": "Hello!", "agent": "greeter"}`; `agent` on the assistant's turns."""

    agent: str


class CallMetrics(TypedDict, total=False):
    duration_seconds: int
    agent_count: int
    message_count: int


@dataclass(frozen=True)
class _Common:
    """The fields every call event of the guide carries, in the guide's order."""

    call_id: str
    room_name: str | None = None
    workflow_slug: str | None = None
    user_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def _build(
    type_: EventType, common: _Common, fields: Sequence[tuple[str, Any]], metadata: Mapping[str, Any] | None
) -> Event:
    data: dict[str, Any] = {"call_id": common.call_id}
    ordered = [
        ("room_name", common.room_name),
        ("workflow_slug", common.workflow_slug),
        ("user_id", common.user_id),
        *fields,
        ("metadata", dict(metadata) if metadata is not None else None),
    ]
    data.update((name, value) for name, value in ordered if value is not None)
    for name, value in common.extra.items():
        data.setdefault(name, value)
    return Event(type_, data)


def call_started(
    *,
    call_id: str,
    room_name: str | None = None,
    workflow_slug: str | None = None,
    user_id: str | None = None,
    status: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Event:
    """`call.started`: a call was initiated."""
    common = _Common(call_id, room_name, workflow_slug, user_id, extra)
    return _build("call.started", common, [("status", status)], metadata)


def call_connected(
    *,
    call_id: str,
    room_name: str | None = None,
    workflow_slug: str | None = None,
    user_id: str | None = None,
    status: str | None = None,
    agent_history: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Event:
    """`call.connected`: the agent connected."""
    common = _Common(call_id, room_name, workflow_slug, user_id, extra)
    fields = [("status", status), ("agent_history", _list(agent_history))]
    return _build("call.connected", common, fields, metadata)


def call_completed(
    *,
    call_id: str,
    room_name: str | None = None,
    workflow_slug: str | None = None,
    user_id: str | None = None,
    status: str = "completed",
    duration_seconds: int | None = None,
    agent_history: Sequence[str] | None = None,
    transcript: Sequence[TranscriptEntry] | None = None,
    metrics: CallMetrics | None = None,
    metadata: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Event:
    """`call.completed`: normal completion; `data` is the guide's webhook payload example, field for field.

    `transcript` and `metrics` reach only webhooks whose filter includes them.
    """
    common = _Common(call_id, room_name, workflow_slug, user_id, extra)
    fields = [
        ("status", status),
        ("duration_seconds", duration_seconds),
        ("agent_history", _list(agent_history)),
        ("transcript", _list(transcript)),
        ("metrics", dict(metrics) if metrics is not None else None),
    ]
    return _build("call.completed", common, fields, metadata)


def call_failed(
    *,
    call_id: str,
    room_name: str | None = None,
    workflow_slug: str | None = None,
    user_id: str | None = None,
    status: str = "failed",
    status_reason: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Event:
    """`call.failed`: the connection failed; the guide's handler reads `status_reason`."""
    common = _Common(call_id, room_name, workflow_slug, user_id, extra)
    return _build("call.failed", common, [("status", status), ("status_reason", status_reason)], metadata)


def call_disconnected(
    *,
    call_id: str,
    room_name: str | None = None,
    workflow_slug: str | None = None,
    user_id: str | None = None,
    status: str = "disconnected",
    status_reason: str | None = None,
    duration_seconds: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Event:
    """`call.disconnected`: an unexpected drop."""
    common = _Common(call_id, room_name, workflow_slug, user_id, extra)
    fields = [("status", status), ("status_reason", status_reason), ("duration_seconds", duration_seconds)]
    return _build("call.disconnected", common, fields, metadata)


def call_agent_changed(
    *,
    call_id: str,
    room_name: str | None = None,
    workflow_slug: str | None = None,
    user_id: str | None = None,
    agent_history: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Event:
    """`call.agent.changed`: a handoff; `agent_history` lists the agents so far, the new one last."""
    common = _Common(call_id, room_name, workflow_slug, user_id, extra)
    return _build("call.agent.changed", common, [("agent_history", _list(agent_history))], metadata)


def _list(values: Sequence[Any] | None) -> list[Any] | None:
    return [dict(v) if isinstance(v, Mapping) else v for v in values] if values is not None else None

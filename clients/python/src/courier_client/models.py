"""What the API answers, as typed values. Each keeps the whole JSON object in `raw`, so a field added to the server
later is readable before this package knows it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from .errors import APIError, CourierError, TransportError

__all__ = [
    "Accepted",
    "Attempt",
    "Delivery",
    "EventRecord",
    "ItemResult",
    "Page",
    "PortalSession",
    "ReplayCount",
    "ReplayState",
    "Webhook",
    "WebhookFilter",
]

JSON = dict[str, Any]
T = TypeVar("T")


def parse_time(value: object) -> datetime | None:
    """RFC 3339 as Courier writes it (`Z`, up to nanoseconds) into an aware datetime; `None` stays `None`."""
    if not isinstance(value, str):
        return None
    text = value.replace("Z", "+00:00").replace("z", "+00:00")
    if "." in text:
        head, rest = text.split(".", 1)
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:digits][:6].ljust(6, '0')}{rest[digits:]}"
    return datetime.fromisoformat(text)


def _time(raw: Mapping[str, Any], key: str) -> datetime:
    parsed = parse_time(raw.get(key))
    if parsed is None:
        raise ValueError(f"`{key}` is missing from the answer")
    return parsed


def _opt_int(value: object) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Accepted:
    """An event Courier stored: its id, the deliveries it fanned out to, and whether this call stored it.

    `first_time` is False when the event was already stored before this call (the server answered 200, and no
    earlier try of this call can have stored it); True when this call stored it, including when a try's answer
    was lost after the server committed and the retry was answered as a repeat.
    """

    id: str
    deliveries: int
    first_time: bool
    #: Tries this call made (1 when the first try answered).
    tries: int = 1


@dataclass(frozen=True)
class ItemResult:
    """One event of `send_batch`, in input order: accepted, or the error of that item (or of its whole chunk)."""

    index: int
    id: str
    deliveries: int | None = None
    error: CourierError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def retryable(self) -> bool:
        """Whether sending this item again (same id) can succeed: its chunk failed as a whole, not the item."""
        if isinstance(self.error, TransportError):
            return True
        status = self.error.status_code if isinstance(self.error, APIError) else None
        return status is not None and (status in (408, 429) or status >= 500)


@dataclass(frozen=True)
class WebhookFilter:
    events: list[str]
    include_transcript: bool
    include_metrics: bool

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> WebhookFilter:
        return cls(
            events=list(raw.get("events", [])),
            include_transcript=bool(raw.get("include_transcript", False)),
            include_metrics=bool(raw.get("include_metrics", False)),
        )


@dataclass(frozen=True)
class Webhook:
    id: str
    url: str
    filter: WebhookFilter
    status: str
    livemode: bool
    max_attempts: int
    ordering: str
    headers: dict[str, str]
    created_at: datetime
    updated_at: datetime
    description: str | None = None
    disabled_reason: str | None = None
    rate_limit_per_second: int | None = None
    #: Only in the answers to create and rotate: keep it, it is never shown again.
    secret: str | None = None
    previous_secret_expires_at: datetime | None = None
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: JSON) -> Webhook:
        rate = raw.get("rate_limit")
        return cls(
            id=raw["id"],
            url=raw["url"],
            filter=WebhookFilter.from_json(raw.get("filter") or {}),
            status=raw["status"],
            livemode=bool(raw["livemode"]),
            max_attempts=int(raw["max_attempts"]),
            ordering=str(raw.get("ordering", "none")),
            headers=dict(raw.get("headers") or {}),
            created_at=_time(raw, "created_at"),
            updated_at=_time(raw, "updated_at"),
            description=_opt_str(raw.get("description")),
            disabled_reason=_opt_str(raw.get("disabled_reason")),
            rate_limit_per_second=_opt_int(rate.get("per_second")) if isinstance(rate, Mapping) else None,
            secret=_opt_str(raw.get("secret")),
            previous_secret_expires_at=parse_time(raw.get("previous_secret_expires_at")),
            raw=raw,
        )


@dataclass(frozen=True)
class Attempt:
    attempt: int
    started_at: datetime
    duration_ms: int
    #: The receiver's status, `None` when no answer came (then `error_kind` says why).
    status_code: int | None
    error_kind: str | None
    error_message: str | None
    response_body: str | None
    signature_timestamp: int | None
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: JSON) -> Attempt:
        return cls(
            attempt=int(raw["attempt"]),
            started_at=_time(raw, "started_at"),
            duration_ms=int(raw["duration_ms"]),
            status_code=_opt_int(raw.get("status_code")),
            error_kind=_opt_str(raw.get("error_kind")),
            error_message=_opt_str(raw.get("error_message")),
            response_body=_opt_str(raw.get("response_body")),
            signature_timestamp=_opt_int(raw.get("signature_timestamp")),
            raw=raw,
        )


@dataclass(frozen=True)
class Delivery:
    id: str
    event_id: str
    event_type: str
    call_id: str
    webhook_id: str
    #: `waiting`, `pending`, `delivering`, `succeeded`, `failed` or `cancelled`.
    status: str
    attempt_count: int
    max_attempts: int
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None = None
    replay_of: str | None = None
    last_error: str | None = None
    last_status_code: int | None = None
    #: Only from `deliveries.get`, oldest first.
    attempts: list[Attempt] | None = None
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: JSON) -> Delivery:
        attempts = raw.get("attempts")
        return cls(
            id=raw["id"],
            event_id=raw["event_id"],
            event_type=raw["event_type"],
            call_id=str(raw.get("call_id", "")),
            webhook_id=raw["webhook_id"],
            status=raw["status"],
            attempt_count=int(raw["attempt_count"]),
            max_attempts=int(raw["max_attempts"]),
            created_at=_time(raw, "created_at"),
            updated_at=_time(raw, "updated_at"),
            next_attempt_at=parse_time(raw.get("next_attempt_at")),
            replay_of=_opt_str(raw.get("replay_of")),
            last_error=_opt_str(raw.get("last_error")),
            last_status_code=_opt_int(raw.get("last_status_code")),
            attempts=[Attempt.from_json(a) for a in attempts] if isinstance(attempts, list) else None,
            raw=raw,
        )


@dataclass(frozen=True)
class EventRecord:
    """A stored event, as `events.get` and `events.list` read it back."""

    id: str
    type: str
    created: int
    livemode: bool
    data: JSON
    received_at: datetime
    deliveries: list[Delivery] | None = None
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: JSON) -> EventRecord:
        deliveries = raw.get("deliveries")
        return cls(
            id=raw["id"],
            type=raw["type"],
            created=int(raw["created"]),
            livemode=bool(raw["livemode"]),
            data=dict(raw.get("data") or {}),
            received_at=_time(raw, "received_at"),
            deliveries=[Delivery.from_json(d) for d in deliveries] if isinstance(deliveries, list) else None,
            raw=raw,
        )


@dataclass(frozen=True)
class ReplayState:
    """A bulk replay job's progress."""

    id: str
    #: `queued`, `running`, `finished` or `failed`.
    status: str
    replayed: int
    scanned: int
    created_at: datetime
    updated_at: datetime
    error: str | None = None
    finished_at: datetime | None = None
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @property
    def done(self) -> bool:
        return self.status in ("finished", "failed")

    @classmethod
    def from_json(cls, raw: JSON) -> ReplayState:
        return cls(
            id=raw["id"],
            status=raw["status"],
            replayed=int(raw["replayed"]),
            scanned=int(raw["scanned"]),
            created_at=_time(raw, "created_at"),
            updated_at=_time(raw, "updated_at"),
            error=_opt_str(raw.get("error")),
            finished_at=parse_time(raw.get("finished_at")),
            raw=raw,
        )


@dataclass(frozen=True)
class ReplayCount:
    """A bulk replay's dry run: how many deliveries it would queue now."""

    queued: int


@dataclass(frozen=True)
class PortalSession:
    id: str
    #: The single-use magic link; it works once, within ten minutes.
    url: str
    scopes: list[str]
    expires_at: datetime

    @classmethod
    def from_json(cls, raw: JSON) -> PortalSession:
        return cls(id=raw["id"], url=raw["url"], scopes=list(raw["scopes"]), expires_at=_time(raw, "expires_at"))


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list, newest first; `next_cursor` is `None` on the last page.

    A filtered delivery page may be short, even empty, and still have a `next_cursor`: the `iter` methods follow
    the cursors for you.
    """

    data: list[T]
    next_cursor: str | None

    def __iter__(self) -> Iterator[T]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

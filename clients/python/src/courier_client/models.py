"""What the API answers, as typed values. Each keeps the whole JSON object in `raw`, so a field added to the server
later is readable before this package knows it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
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


M = TypeVar("M")


def _decode(cls: type[M], raw: JSON, **special: Callable[[Any], Any]) -> M:
    """A model from its JSON object: each field from the key of its name (times, the fields named `…_at`, parsed;
    `special` converters for the rest that need one), absent optional keys as the field's default, and `raw`.
    """
    values: dict[str, Any] = {"raw": raw}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name == "raw":
            continue
        if f.name in special:
            values[f.name] = special[f.name](raw.get(f.name))
        elif f.name.endswith("_at"):
            values[f.name] = parse_time(raw.get(f.name))
        elif f.name in raw:
            values[f.name] = raw[f.name]
    return cls(**values)


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
        def per_second(_: object) -> int | None:
            rate = raw.get("rate_limit")
            return rate.get("per_second") if isinstance(rate, Mapping) else None

        return _decode(
            cls,
            raw,
            filter=lambda f: WebhookFilter(list(f["events"]), f["include_transcript"], f["include_metrics"]),
            rate_limit_per_second=per_second,
        )


@dataclass(frozen=True)
class Attempt:
    attempt: int
    started_at: datetime
    duration_ms: int
    #: The receiver's status, `None` when no answer came (then `error_kind` says why).
    status_code: int | None = None
    error_kind: str | None = None
    error_message: str | None = None
    #: The first 4 KiB of the receiver's answer, as text.
    response_body: str | None = None
    signature_timestamp: int | None = None
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: JSON) -> Attempt:
        return _decode(cls, raw)


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
        return _decode(cls, raw, attempts=lambda a: None if a is None else [Attempt.from_json(x) for x in a])


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
        return _decode(cls, raw, deliveries=lambda d: None if d is None else [Delivery.from_json(x) for x in d])


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
        return _decode(cls, raw)


@dataclass(frozen=True)
class PortalSession:
    id: str
    #: The single-use magic link; it works once, within ten minutes.
    url: str
    scopes: list[str]
    expires_at: datetime
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: JSON) -> PortalSession:
        return _decode(cls, raw)


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

"""Every API call as a value: what to send, whether it may be repeated, and how to read the answer.

The sync and async clients both run these `Call`s; only their loops (sleep, await) are their own, so the wire
format is written once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from .errors import AuthenticationError, CourierError, PermissionError, error_from_body
from .events import Event
from .models import (
    Accepted,
    Delivery,
    EventRecord,
    ItemResult,
    Page,
    PortalSession,
    ReplayCount,
    ReplayState,
    Webhook,
)
from .retry import Tries

T = TypeVar("T")

#: Events per batch request (the server refuses a 1,001st).
MAX_BATCH_EVENTS = 1000
#: Bytes per batch request: the server's limit is 16 MiB; stay a little under it.
MAX_BATCH_BYTES = 16 * 1024 * 1024 - 64 * 1024
USER_AGENT = "courier-client-python/0.1.0"


class Unset:
    """The type of `UNSET`: a PATCH field not given (where `None` means "clear it")."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()


@dataclass(frozen=True)
class Answer:
    """A successful answer and how it came."""

    status_code: int
    body: Any
    request_id: str | None
    tries: int
    #: An earlier try may have carried the request out (its answer was lost).
    maybe_done_before: bool


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Answer], T]
    params: Mapping[str, str] | None = None
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Safe to send again whatever happened to an earlier try (reads, PATCH, DELETE, events with their ids).
    idempotent: bool = True
    #: A 404 after a try that may have been carried out means it was (a DELETE whose answer was lost).
    not_found_is_done: bool = False

    def request(self, client: httpx.Client | httpx.AsyncClient, timeout: float | None) -> httpx.Request:
        headers = dict(self.headers)
        if self.body is not None:
            headers["content-type"] = "application/json"
        return client.build_request(
            self.method, self.path, params=self.params, content=self.body, headers=headers, timeout=timeout
        )


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def parse_answer(response: httpx.Response, tries: int, maybe_done_before: bool) -> Answer:
    body = response.json() if response.content else None
    return Answer(response.status_code, body, response.headers.get("x-request-id"), tries, maybe_done_before)


def default_headers(api_key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key}", "user-agent": USER_AGENT, "accept": "application/json"}


def trace_headers(traceparent: str | None, propagate: bool) -> dict[str, str]:
    """`traceparent` (and `tracestate`): the one given, else OpenTelemetry's current span when installed."""
    if traceparent is not None:
        return {"traceparent": traceparent}
    if not propagate:
        return {}
    try:
        from opentelemetry import propagate as otel_propagate
    except ImportError:
        return {}
    carrier: dict[str, str] = {}
    otel_propagate.inject(carrier)
    return {k: v for k, v in carrier.items() if k in ("traceparent", "tracestate")}


# --- events ---


def send_event(event: Event, headers: Mapping[str, str]) -> Call[Accepted]:
    def parse(answer: Answer) -> Accepted:
        first_time = answer.status_code == 201 or answer.maybe_done_before
        return Accepted(answer.body["id"], int(answer.body["deliveries"]), first_time, answer.tries)

    return Call("POST", "/api/v1/events", parse, body=dumps(event.to_json()), headers=headers)


@dataclass(frozen=True)
class Chunk:
    """One batch request: the inputs' positions and the body, built once and sent as is on every try."""

    start: int
    ids: list[str]
    body: bytes


def plan_batch(events: Iterable[Event | Mapping[str, Any]]) -> list[Chunk]:
    """Ids for every event (before any try), then requests of at most 1,000 events and 16 MiB, in order."""
    chunks: list[Chunk] = []
    ids: list[str] = []
    parts: list[bytes] = []
    size = 0
    start = 0
    for index, raw in enumerate(events):
        event = Event.coerce(raw).with_id()
        assert event.id is not None
        part = dumps(event.to_json())
        if parts and (len(parts) == MAX_BATCH_EVENTS or size + len(part) + 1 > MAX_BATCH_BYTES):
            chunks.append(Chunk(start, ids, b'{"events":[' + b",".join(parts) + b"]}"))
            start, ids, parts, size = index, [], [], 0
        ids.append(event.id)
        parts.append(part)
        size += len(part) + 1
    if parts:
        chunks.append(Chunk(start, ids, b'{"events":[' + b",".join(parts) + b"]}"))
    return chunks


def send_chunk(chunk: Chunk, headers: Mapping[str, str]) -> Call[list[ItemResult]]:
    def parse(answer: Answer) -> list[ItemResult]:
        items = answer.body["data"]
        results = []
        for offset, (event_id, item) in enumerate(zip(chunk.ids, items, strict=True)):
            index = chunk.start + offset
            if "error" in item:
                error = error_from_body(item, status_code=None, request_id=answer.request_id, tries=answer.tries)
                results.append(ItemResult(index, event_id, error=error))
            else:
                results.append(ItemResult(index, event_id, deliveries=int(item["deliveries"])))
        return results

    return Call("POST", "/api/v1/events/batch", parse, body=chunk.body, headers=headers)


def chunk_failed(chunk: Chunk, error: CourierError) -> list[ItemResult]:
    """Every item of a chunk that failed as a whole, each carrying the chunk's error.

    A key refused outright (401, 403) fails every chunk alike, so it is raised instead.
    """
    if isinstance(error, (AuthenticationError, PermissionError)):
        raise error
    return [ItemResult(chunk.start + i, event_id, error=error) for i, event_id in enumerate(chunk.ids)]


def get_event(event_id: str) -> Call[EventRecord]:
    return Call("GET", f"/api/v1/events/{event_id}", lambda a: EventRecord.from_json(a.body))


def list_events(limit: int | None, cursor: str | None) -> Call[Page[EventRecord]]:
    return Call("GET", "/api/v1/events", _page(EventRecord.from_json), params=_params(limit=limit, cursor=cursor))


# --- webhooks ---


def _webhook_fields(fields: Mapping[str, Any], rate_limit_per_second: int | None | Unset) -> dict[str, Any]:
    """The given fields of a webhook's create or PATCH body (`UNSET` ones left out; `None` sent as null)."""
    body = {name: dict(v) if isinstance(v, Mapping) else v for name, v in fields.items() if not isinstance(v, Unset)}
    if not isinstance(rate_limit_per_second, Unset):
        body["rate_limit"] = None if rate_limit_per_second is None else {"per_second": rate_limit_per_second}
    return body


def create_webhook(
    url: str,
    filter: Mapping[str, Any] | None,
    description: str | None,
    max_attempts: int | None,
    ordering: str | None,
    headers: Mapping[str, str] | None,
    rate_limit_per_second: int | None,
) -> Call[Webhook]:
    optional = {
        "filter": filter,
        "description": description,
        "max_attempts": max_attempts,
        "ordering": ordering,
        "headers": headers,
    }
    fields = {"url": url, **{name: value for name, value in optional.items() if value is not None}}
    rate: int | Unset = UNSET if rate_limit_per_second is None else rate_limit_per_second
    body = dumps(_webhook_fields(fields, rate))
    return Call("POST", "/api/v1/webhooks", _one(Webhook.from_json), body=body, idempotent=False)


def update_webhook(
    webhook_id: str,
    url: str | Unset,
    filter: Mapping[str, Any] | Unset,
    description: str | None | Unset,
    max_attempts: int | Unset,
    ordering: str | Unset,
    headers: Mapping[str, str] | Unset,
    rate_limit_per_second: int | None | Unset,
    status: str | Unset,
) -> Call[Webhook]:
    fields = {
        "url": url,
        "filter": filter,
        "description": description,
        "max_attempts": max_attempts,
        "ordering": ordering,
        "headers": headers,
        "status": status,
    }
    body = dumps(_webhook_fields(fields, rate_limit_per_second))
    return Call("PATCH", f"/api/v1/webhooks/{webhook_id}", _one(Webhook.from_json), body=body)


def get_webhook(webhook_id: str) -> Call[Webhook]:
    return Call("GET", f"/api/v1/webhooks/{webhook_id}", _one(Webhook.from_json))


def list_webhooks(limit: int | None, cursor: str | None) -> Call[Page[Webhook]]:
    return Call("GET", "/api/v1/webhooks", _page(Webhook.from_json), params=_params(limit=limit, cursor=cursor))


def delete_webhook(webhook_id: str) -> Call[None]:
    return Call("DELETE", f"/api/v1/webhooks/{webhook_id}", lambda _: None, not_found_is_done=True)


def rotate_secret(webhook_id: str) -> Call[Webhook]:
    path = f"/api/v1/webhooks/{webhook_id}/rotate-secret"
    return Call("POST", path, _one(Webhook.from_json), idempotent=False)


# --- deliveries and replays ---


def list_deliveries(
    status: str | None,
    webhook_id: str | None,
    event_type: str | None,
    call_id: str | None,
    since: str | None,
    until: str | None,
    limit: int | None,
    cursor: str | None,
) -> Call[Page[Delivery]]:
    params = _params(
        status=status,
        webhook_id=webhook_id,
        event_type=event_type,
        call_id=call_id,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
    )
    return Call("GET", "/api/v1/deliveries", _page(Delivery.from_json), params=params)


def get_delivery(delivery_id: str) -> Call[Delivery]:
    return Call("GET", f"/api/v1/deliveries/{delivery_id}", _one(Delivery.from_json))


def replay_delivery(delivery_id: str) -> Call[Delivery]:
    path = f"/api/v1/deliveries/{delivery_id}/replay"
    return Call("POST", path, _one(Delivery.from_json), idempotent=False)


def _replay_filter(
    webhook_id: str | None,
    status: str | None,
    event_types: Sequence[str] | None,
    since: str | None,
    until: str | None,
    dry_run: bool,
) -> bytes:
    body: dict[str, Any] = {"dry_run": dry_run}
    for name, value in [
        ("webhook_id", webhook_id),
        ("status", status),
        ("event_types", list(event_types) if event_types is not None else None),
        ("since", since),
        ("until", until),
    ]:
        if value is not None:
            body[name] = value
    return dumps(body)


def replay_bulk(
    webhook_id: str | None,
    status: str | None,
    event_types: Sequence[str] | None,
    since: str | None,
    until: str | None,
) -> Call[ReplayState]:
    body = _replay_filter(webhook_id, status, event_types, since, until, dry_run=False)
    return Call("POST", "/api/v1/deliveries/replay", _one(ReplayState.from_json), body=body, idempotent=False)


def replay_bulk_dry_run(
    webhook_id: str | None,
    status: str | None,
    event_types: Sequence[str] | None,
    since: str | None,
    until: str | None,
) -> Call[ReplayCount]:
    body = _replay_filter(webhook_id, status, event_types, since, until, dry_run=True)
    return Call("POST", "/api/v1/deliveries/replay", lambda a: ReplayCount(int(a.body["queued"])), body=body)


def get_replay(replay_id: str) -> Call[ReplayState]:
    return Call("GET", f"/api/v1/replays/{replay_id}", _one(ReplayState.from_json))


# --- portal ---


def portal_session(scopes: Sequence[str], expires_in: int | None) -> Call[PortalSession]:
    body: dict[str, Any] = {"scopes": list(scopes)}
    if expires_in is not None:
        body["expires_in"] = expires_in
    parse = _one(PortalSession.from_json)
    return Call("POST", "/api/v1/portal/sessions", parse, body=dumps(body), idempotent=False)


# --- helpers ---


def _one(from_json: Callable[[dict[str, Any]], T]) -> Callable[[Answer], T]:
    return lambda answer: from_json(answer.body)


def _page(from_json: Callable[[dict[str, Any]], T]) -> Callable[[Answer], Page[T]]:
    def parse(answer: Answer) -> Page[T]:
        return Page([from_json(item) for item in answer.body["data"]], answer.body.get("next_cursor"))

    return parse


def _params(**values: str | int | None) -> dict[str, str]:
    return {name: str(value) for name, value in values.items() if value is not None}


# --- running a call ---


@dataclass(frozen=True)
class Done(Generic[T]):
    value: T


def settle(call: Call[T], tries: Tries, response: httpx.Response) -> Done[T] | float:
    """The call's result from an answer, or the wait before the next try (raising when there is none)."""
    if response.status_code < 400:
        return Done(call.parse(parse_answer(response, tries.count, tries.maybe_done)))
    if response.status_code == 404 and call.not_found_is_done and tries.maybe_done:
        # An earlier try did it and lost its answer: the object is gone, which is what was asked.
        return Done(call.parse(Answer(404, None, response.headers.get("x-request-id"), tries.count, True)))
    return tries.after_response(response)


def settings(base_url: str | None, api_key: str | None) -> tuple[str, str]:
    """The base URL and key, from the arguments or else `COURIER_URL` and `COURIER_API_KEY`."""
    base_url = base_url or os.environ.get("COURIER_URL")
    api_key = api_key or os.environ.get("COURIER_API_KEY")
    if not base_url:
        raise ValueError("no base_url given and COURIER_URL is not set")
    if not api_key:
        raise ValueError("no api_key given and COURIER_API_KEY is not set")
    return base_url.rstrip("/"), api_key

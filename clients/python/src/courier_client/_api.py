"""Every API call as a value: what to send, whether it may be repeated, and how to read the answer.

The sync and async clients both run these `Call`s; only their loops (sleep, await) are their own, so the wire
format is written once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypedDict, TypeVar

import httpx

from . import models
from .errors import AuthenticationError, CourierError, PermissionError, error_from_body
from .events import Event
from .retry import RetryPolicy, Tries

T = TypeVar("T")
H = TypeVar("H", httpx.Client, httpx.AsyncClient)

#: Events per batch request (the server refuses a 1,001st).
MAX_BATCH_EVENTS = 1000
#: Bytes per batch request: the server's limit is 16 MiB; stay a little under it.
MAX_BATCH_BYTES = 16 * 1024 * 1024 - 64 * 1024
USER_AGENT = "courier-client-python/0.1.0"


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


# --- events ---


def send_event(event: Event | Mapping[str, Any], headers: Mapping[str, str]) -> Call[models.Accepted]:
    """One event, with its id made now (before the first try) unless it has one."""
    event = Event.coerce(event).with_id()

    def parse(answer: Answer) -> models.Accepted:
        first_time = answer.status_code == 201 or answer.maybe_done_before
        return models.Accepted(answer.body["id"], int(answer.body["deliveries"]), first_time, answer.tries)

    return Call("POST", "/api/v1/events", parse, body=dumps(event.to_json()), headers=headers)


@dataclass(frozen=True)
class Chunk:
    """One batch request: the inputs' positions and the body, built once and sent as is on every try."""

    start: int
    ids: list[str]
    body: bytes


def plan_batch(events: Iterable[Event | Mapping[str, Any]]) -> Iterator[Chunk]:
    """Requests of at most 1,000 events and 16 MiB, in order, each event given its id before its first try.

    A generator: a chunk's events are read (and serialised) only when the chunk before it was answered, so a
    long iterable is never held in memory whole.
    """
    ids: list[str] = []
    parts: list[bytes] = []
    size = 0
    start = 0
    for index, raw in enumerate(events):
        event = Event.coerce(raw).with_id()
        assert event.id is not None
        part = dumps(event.to_json())
        if parts and (len(parts) == MAX_BATCH_EVENTS or size + len(part) + 1 > MAX_BATCH_BYTES):
            yield Chunk(start, ids, b'{"events":[' + b",".join(parts) + b"]}")
            start, ids, parts, size = index, [], [], 0
        ids.append(event.id)
        parts.append(part)
        size += len(part) + 1
    if parts:
        yield Chunk(start, ids, b'{"events":[' + b",".join(parts) + b"]}")


def send_chunk(chunk: Chunk, headers: Mapping[str, str]) -> Call[list[models.ItemResult]]:
    def parse(answer: Answer) -> list[models.ItemResult]:
        items = answer.body["data"]
        results = []
        for offset, (event_id, item) in enumerate(zip(chunk.ids, items, strict=True)):
            index = chunk.start + offset
            if "error" in item:
                error = error_from_body(item, status_code=None, request_id=answer.request_id, tries=answer.tries)
                results.append(models.ItemResult(index, event_id, error=error))
            else:
                results.append(models.ItemResult(index, event_id, deliveries=int(item["deliveries"])))
        return results

    return Call("POST", "/api/v1/events/batch", parse, body=chunk.body, headers=headers)


def chunk_failed(chunk: Chunk, error: CourierError) -> list[models.ItemResult]:
    """Every item of a chunk that failed as a whole, each carrying the chunk's error.

    A key refused outright (401, 403) fails every chunk alike, so it is raised instead.
    """
    if isinstance(error, (AuthenticationError, PermissionError)):
        raise error
    return [models.ItemResult(chunk.start + i, event_id, error=error) for i, event_id in enumerate(chunk.ids)]


def get_event(event_id: str) -> Call[models.EventRecord]:
    return Call("GET", f"/api/v1/events/{event_id}", lambda a: models.EventRecord.from_json(a.body))


def list_events(limit: int | None, cursor: str | None) -> Call[models.Page[models.EventRecord]]:
    return Call(
        "GET", "/api/v1/events", _page(models.EventRecord.from_json), params=_params(limit=limit, cursor=cursor)
    )


# --- webhooks ---


class WebhookOptions(TypedDict, total=False):
    """A webhook's optional fields, as `webhooks.create` takes them."""

    #: `{"events": [...], "include_transcript": bool, "include_metrics": bool}`; every type when absent.
    filter: Mapping[str, Any]
    description: str
    max_attempts: int
    #: `"none"` or `"call"` (per-call order).
    ordering: str
    #: Sent with every attempt; stored encrypted and shown masked.
    headers: Mapping[str, str]
    rate_limit_per_second: int


class WebhookChanges(TypedDict, total=False):
    """What `webhooks.update` may change; a field left out stays, `None` clears `description` or the rate limit."""

    url: str
    filter: Mapping[str, Any]
    description: str | None
    max_attempts: int
    ordering: str
    headers: Mapping[str, str]
    rate_limit_per_second: int | None
    #: `"enabled"` or `"disabled"` (disabling cancels pending deliveries).
    status: str


def _webhook_body(fields: Mapping[str, Any], allowed: type[Any]) -> bytes:
    """The JSON body of a webhook create or PATCH: the fields given, `rate_limit_per_second` as `rate_limit`."""
    body = {name: dict(value) if isinstance(value, Mapping) else value for name, value in _only(fields, allowed)}
    if "rate_limit_per_second" in body:
        per_second = body.pop("rate_limit_per_second")
        body["rate_limit"] = None if per_second is None else {"per_second": per_second}
    return dumps(body)


def create_webhook(url: str, options: WebhookOptions) -> Call[models.Webhook]:
    body = _webhook_body({"url": url, **options}, WebhookOptions)
    return Call("POST", "/api/v1/webhooks", _one(models.Webhook.from_json), body=body, idempotent=False)


def update_webhook(webhook_id: str, changes: WebhookChanges) -> Call[models.Webhook]:
    body = _webhook_body(changes, WebhookChanges)
    return Call("PATCH", f"/api/v1/webhooks/{webhook_id}", _one(models.Webhook.from_json), body=body)


def get_webhook(webhook_id: str) -> Call[models.Webhook]:
    return Call("GET", f"/api/v1/webhooks/{webhook_id}", _one(models.Webhook.from_json))


def list_webhooks(limit: int | None, cursor: str | None) -> Call[models.Page[models.Webhook]]:
    return Call("GET", "/api/v1/webhooks", _page(models.Webhook.from_json), params=_params(limit=limit, cursor=cursor))


def delete_webhook(webhook_id: str) -> Call[None]:
    return Call("DELETE", f"/api/v1/webhooks/{webhook_id}", lambda _: None, not_found_is_done=True)


def rotate_secret(webhook_id: str) -> Call[models.Webhook]:
    path = f"/api/v1/webhooks/{webhook_id}/rotate-secret"
    return Call("POST", path, _one(models.Webhook.from_json), idempotent=False)


# --- deliveries and replays ---


class DeliveryFilters(TypedDict, total=False):
    """Which deliveries a log page holds; each narrows the list."""

    #: `waiting`, `pending`, `delivering`, `succeeded`, `failed` or `cancelled`.
    status: str
    webhook_id: str
    event_type: str
    call_id: str
    #: RFC 3339: created at or after.
    since: str
    #: RFC 3339: created before.
    until: str


class ReplayFilters(TypedDict, total=False):
    """Which deliveries a bulk replay takes; `status` is `failed` when absent."""

    webhook_id: str
    status: str
    event_types: Sequence[str]
    since: str
    until: str


def list_deliveries(
    filters: DeliveryFilters, limit: int | None, cursor: str | None
) -> Call[models.Page[models.Delivery]]:
    params = _params(**dict(_only(filters, DeliveryFilters)), limit=limit, cursor=cursor)
    return Call("GET", "/api/v1/deliveries", _page(models.Delivery.from_json), params=params)


def get_delivery(delivery_id: str) -> Call[models.Delivery]:
    return Call("GET", f"/api/v1/deliveries/{delivery_id}", _one(models.Delivery.from_json))


def replay_delivery(delivery_id: str) -> Call[models.Delivery]:
    path = f"/api/v1/deliveries/{delivery_id}/replay"
    return Call("POST", path, _one(models.Delivery.from_json), idempotent=False)


def _replay_body(filters: ReplayFilters, dry_run: bool) -> bytes:
    body = {name: list(v) if name == "event_types" else v for name, v in _only(filters, ReplayFilters)}
    return dumps({**body, "dry_run": dry_run})


def replay_bulk(filters: ReplayFilters) -> Call[models.ReplayState]:
    body = _replay_body(filters, dry_run=False)
    return Call("POST", "/api/v1/deliveries/replay", _one(models.ReplayState.from_json), body=body, idempotent=False)


def replay_bulk_dry_run(filters: ReplayFilters) -> Call[int]:
    body = _replay_body(filters, dry_run=True)
    return Call("POST", "/api/v1/deliveries/replay", lambda a: int(a.body["queued"]), body=body)


def get_replay(replay_id: str) -> Call[models.ReplayState]:
    return Call("GET", f"/api/v1/replays/{replay_id}", _one(models.ReplayState.from_json))


# --- portal ---


def portal_session(scopes: Sequence[str], expires_in: int | None) -> Call[models.PortalSession]:
    body: dict[str, Any] = {"scopes": list(scopes)}
    if expires_in is not None:
        body["expires_in"] = expires_in
    parse = _one(models.PortalSession.from_json)
    return Call("POST", "/api/v1/portal/sessions", parse, body=dumps(body), idempotent=False)


# --- helpers ---


def _one(from_json: Callable[[dict[str, Any]], T]) -> Callable[[Answer], T]:
    return lambda answer: from_json(answer.body)


def _page(from_json: Callable[[dict[str, Any]], T]) -> Callable[[Answer], models.Page[T]]:
    def parse(answer: Answer) -> models.Page[T]:
        return models.Page([from_json(item) for item in answer.body["data"]], answer.body.get("next_cursor"))

    return parse


def _params(**values: Any) -> dict[str, str]:
    return {name: str(value) for name, value in values.items() if value is not None}


def _only(fields: Mapping[str, Any], allowed: type[Any]) -> list[tuple[str, Any]]:
    """The fields given, refusing a name the TypedDict `allowed` does not have (as a keyword argument would)."""
    known = set(allowed.__annotations__) | {"url"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise TypeError(f"unexpected argument(s): {', '.join(unknown)}")
    return list(fields.items())


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


class ClientOptions(TypedDict, total=False):
    """The options `Courier` and `AsyncCourier` take beside the URL and key."""

    #: Seconds each try may take (10).
    timeout: float
    #: Retries after the first try (5).
    max_retries: int
    #: Seconds from the first try after which no try starts (60).
    deadline: float
    #: The whole retry policy, replacing `max_retries` and `deadline`.
    retry: RetryPolicy
    #: Send the current OpenTelemetry span as `traceparent` (True; needs `opentelemetry-api`).
    trace: bool


@dataclass(frozen=True)
class Settings:
    """A client's resolved settings, shared by the sync and async clients."""

    base_url: str
    api_key: str
    timeout: float
    policy: RetryPolicy
    trace: bool

    @classmethod
    def resolve(cls, base_url: str | None, api_key: str | None, options: ClientOptions) -> Settings:
        """From the arguments, else `COURIER_URL` and `COURIER_API_KEY` from the environment."""
        base_url = base_url or os.environ.get("COURIER_URL")
        api_key = api_key or os.environ.get("COURIER_API_KEY")
        if not base_url:
            raise ValueError("no base_url given and COURIER_URL is not set")
        if not api_key:
            raise ValueError("no api_key given and COURIER_API_KEY is not set")
        _only(options, ClientOptions)
        policy = options.get("retry") or RetryPolicy(
            max_retries=options.get("max_retries", 5), deadline=options.get("deadline", 60.0)
        )
        return cls(base_url.rstrip("/"), api_key, options.get("timeout", 10.0), policy, options.get("trace", True))

    def configure(self, http: H) -> H:
        """An httpx client pointed at the server, with the key and our user agent."""
        http.base_url = httpx.URL(self.base_url)
        http.headers.update(
            {"authorization": f"Bearer {self.api_key}", "user-agent": USER_AGENT, "accept": "application/json"}
        )
        return http

    def tries(self, call: Call[Any]) -> Tries:
        return Tries(self.policy, idempotent=call.idempotent, timeout=self.timeout)

    def trace_headers(self, traceparent: str | None) -> dict[str, str]:
        """`traceparent` (and `tracestate`): the one given, else OpenTelemetry's current span when installed."""
        if traceparent is not None:
            return {"traceparent": traceparent}
        if not self.trace:
            return {}
        try:
            from opentelemetry import propagate
        except ImportError:
            return {}
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return {k: v for k, v in carrier.items() if k in ("traceparent", "tracestate")}

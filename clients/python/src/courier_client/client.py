"""`Courier`, the synchronous client. `AsyncCourier` (in `async_client`) has the same surface with `await`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from . import _api
from ._api import UNSET, Call, Done, Unset
from .errors import CourierError
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
from .retry import RetryPolicy, Tries

__all__ = ["Courier", "ReplayJob"]

T = TypeVar("T")


class Courier:
    """A client for Courier's API. Thread-safe; keep one per process and `close()` it (or use `with`).

    `timeout` bounds each try; `max_retries` and `deadline` bound the retries (see `RetryPolicy`, which `retry`
    replaces whole). `trace=True` sends the current OpenTelemetry span as `traceparent` when
    `opentelemetry-api` is installed.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        max_retries: int = 5,
        deadline: float = 60.0,
        retry: RetryPolicy | None = None,
        trace: bool = True,
        http_client: httpx.Client | None = None,
    ) -> None:
        base_url, api_key = _api.settings(base_url, api_key)
        self._policy = retry or RetryPolicy(max_retries=max_retries, deadline=deadline)
        self._timeout = timeout
        self._trace = trace
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(base_url=base_url, timeout=timeout)
        self._http.base_url = httpx.URL(base_url)
        self._http.headers.update(_api.default_headers(api_key))
        self.webhooks = Webhooks(self)
        self.deliveries = Deliveries(self)
        self.events = Events(self)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Courier:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _run(self, call: Call[T]) -> T:
        tries = Tries(self._policy, idempotent=call.idempotent, timeout=self._timeout)
        while True:
            request = call.request(self._http, tries.next_timeout())
            try:
                response = self._http.send(request)
            except httpx.TransportError as exc:
                wait = tries.after_exception(exc)
            else:
                result = _api.settle(call, tries, response)
                if isinstance(result, Done):
                    return result.value
                wait = result
            time.sleep(wait)

    # --- emitting ---

    def send(
        self,
        type: str,
        data: Mapping[str, Any],
        *,
        id: str | None = None,
        created: int | None = None,
        traceparent: str | None = None,
    ) -> Accepted:
        """Store one event (`data` must hold a string `call_id`). The id is made before the first try and kept
        on every retry, so a retry never stores the event twice. Raises `ConflictError` when `id` was used for a
        different event.
        """
        return self.send_event(Event(type, dict(data), id, created), traceparent=traceparent)

    def send_event(self, event: Event | Mapping[str, Any], *, traceparent: str | None = None) -> Accepted:
        """`send` for an `Event` (e.g. from `courier_client.events.call_completed(...)`)."""
        headers = _api.trace_headers(traceparent, self._trace)
        return self._run(_api.send_event(Event.coerce(event).with_id(), headers))

    def send_batch(
        self, events: Iterable[Event | Mapping[str, Any]], *, traceparent: str | None = None
    ) -> list[ItemResult]:
        """Store any number of events in requests of up to 1,000; one result per input, in order.

        Each event gets its id before the first request. A request that fails as a whole is retried (same ids,
        same body); one that still fails marks each of its items with that error (`ItemResult.retryable`), while
        an item the server refused carries its own error. A refused key (401, 403) raises.
        """
        headers = _api.trace_headers(traceparent, self._trace)
        results: list[ItemResult] = []
        for chunk in _api.plan_batch(events):
            try:
                items = self._run(_api.send_chunk(chunk, headers))
                results.extend(items)
            except CourierError as error:
                results.extend(_api.chunk_failed(chunk, error))
        return results

    # --- the portal ---

    def portal_session(self, scopes: Sequence[str], expires_in: int | None = None) -> PortalSession:
        """A single-use magic link into the tenant portal with some of this key's scopes (60 s to 24 h)."""
        return self._run(_api.portal_session(scopes, expires_in))


class Webhooks:
    """`client.webhooks`: the tenant's endpoints."""

    def __init__(self, client: Courier) -> None:
        self._client = client

    def create(
        self,
        *,
        url: str,
        filter: Mapping[str, Any] | None = None,
        description: str | None = None,
        max_attempts: int | None = None,
        ordering: str | None = None,
        headers: Mapping[str, str] | None = None,
        rate_limit_per_second: int | None = None,
    ) -> Webhook:
        """A new webhook; its `secret` is in this answer only, so store it now."""
        call = _api.create_webhook(url, filter, description, max_attempts, ordering, headers, rate_limit_per_second)
        return self._client._run(call)

    def get(self, webhook_id: str) -> Webhook:
        return self._client._run(_api.get_webhook(webhook_id))

    def list(self, *, limit: int | None = None, cursor: str | None = None) -> Page[Webhook]:
        return self._client._run(_api.list_webhooks(limit, cursor))

    def iter(self, *, page_size: int = 100) -> Iterator[Webhook]:
        """Every webhook, newest first, following the pages."""
        return _follow(lambda cursor: self.list(limit=page_size, cursor=cursor))

    def update(
        self,
        webhook_id: str,
        *,
        url: str | Unset = UNSET,
        filter: Mapping[str, Any] | Unset = UNSET,
        description: str | None | Unset = UNSET,
        max_attempts: int | Unset = UNSET,
        ordering: str | Unset = UNSET,
        headers: Mapping[str, str] | Unset = UNSET,
        rate_limit_per_second: int | None | Unset = UNSET,
        status: str | Unset = UNSET,
    ) -> Webhook:
        """Change the fields given (`None` clears `description` and `rate_limit_per_second`)."""
        call = _api.update_webhook(
            webhook_id, url, filter, description, max_attempts, ordering, headers, rate_limit_per_second, status
        )
        return self._client._run(call)

    def delete(self, webhook_id: str) -> None:
        self._client._run(_api.delete_webhook(webhook_id))

    def rotate(self, webhook_id: str) -> Webhook:
        """A new secret (in the answer's `secret`); the old one keeps signing beside it for the grace period."""
        return self._client._run(_api.rotate_secret(webhook_id))


class Deliveries:
    """`client.deliveries`: the delivery log and replays."""

    def __init__(self, client: Courier) -> None:
        self._client = client

    def list(
        self,
        *,
        status: str | None = None,
        webhook_id: str | None = None,
        event_type: str | None = None,
        call_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Delivery]:
        """One page, newest first; `since`/`until` are RFC 3339. A filtered page may be short and still go on."""
        call = _api.list_deliveries(status, webhook_id, event_type, call_id, since, until, limit, cursor)
        return self._client._run(call)

    def iter(
        self,
        *,
        status: str | None = None,
        webhook_id: str | None = None,
        event_type: str | None = None,
        call_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Delivery]:
        """Every matching delivery, newest first, following the pages."""
        filters: dict[str, Any] = {
            "status": status,
            "webhook_id": webhook_id,
            "event_type": event_type,
            "call_id": call_id,
            "since": since,
            "until": until,
        }
        return _follow(lambda cursor: self.list(**filters, limit=page_size, cursor=cursor))

    def get(self, delivery_id: str) -> Delivery:
        """One delivery with all its attempts."""
        return self._client._run(_api.get_delivery(delivery_id))

    def replay(self, delivery_id: str) -> Delivery:
        """A new delivery of the same event to the same webhook (`replay_of` the old one)."""
        return self._client._run(_api.replay_delivery(delivery_id))

    def replay_bulk(
        self,
        *,
        webhook_id: str | None = None,
        status: str | None = None,
        event_types: Sequence[str] | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> ReplayJob:
        """Queue a bulk replay job (status `failed` when not given); `job.wait()` follows it to the end."""
        state = self._client._run(_api.replay_bulk(webhook_id, status, event_types, since, until))
        return ReplayJob(self._client, state)

    def count_replay(
        self,
        *,
        webhook_id: str | None = None,
        status: str | None = None,
        event_types: Sequence[str] | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> int:
        """How many deliveries `replay_bulk` with this filter would queue now (a dry run)."""
        call = _api.replay_bulk_dry_run(webhook_id, status, event_types, since, until)
        count: ReplayCount = self._client._run(call)
        return count.queued

    def replay_job(self, replay_id: str) -> ReplayJob:
        return ReplayJob(self._client, self._client._run(_api.get_replay(replay_id)))


class Events:
    """`client.events`: stored events read back."""

    def __init__(self, client: Courier) -> None:
        self._client = client

    def get(self, event_id: str) -> EventRecord:
        """The event with its deliveries."""
        return self._client._run(_api.get_event(event_id))

    def list(self, *, limit: int | None = None, cursor: str | None = None) -> Page[EventRecord]:
        return self._client._run(_api.list_events(limit, cursor))

    def iter(self, *, page_size: int = 100) -> Iterator[EventRecord]:
        return _follow(lambda cursor: self.list(limit=page_size, cursor=cursor))


class ReplayJob:
    """A bulk replay job; `state` is what was last read."""

    def __init__(self, client: Courier, state: ReplayState) -> None:
        self._client = client
        self.state = state

    @property
    def id(self) -> str:
        return self.state.id

    def refresh(self) -> ReplayState:
        self.state = self._client._run(_api.get_replay(self.state.id))
        return self.state

    def wait(self, *, timeout: float = 300.0, interval: float = 0.5) -> ReplayState:
        """Poll until the job is `finished` or `failed` (its `error` says why); `TimeoutError` past `timeout`."""
        deadline = time.monotonic() + timeout
        while not self.state.done:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"replay {self.state.id} still {self.state.status} after {timeout} s")
            time.sleep(interval)
            self.refresh()
        return self.state


def _follow(fetch: Callable[[str | None], Page[T]]) -> Iterator[T]:
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        yield from page.data
        if page.next_cursor is None:
            return
        cursor = page.next_cursor

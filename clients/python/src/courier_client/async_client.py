"""`AsyncCourier`: `Courier`'s surface for asyncio, every call awaited and every `iter` an async iterator.

Generated from client.py by tools/unasync.py; edit that file and run `python -m tools.unasync`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from . import _api
from ._api import Call, ClientOptions, DeliveryFilters, Done, ReplayFilters, WebhookChanges, WebhookOptions
from .errors import CourierError
from .events import Event
from .models import Accepted, Delivery, EventRecord, ItemResult, Page, PortalSession, ReplayState, Webhook

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AsyncCourier", "AsyncReplayJob"]

T = TypeVar("T")


class AsyncCourier:
    """A client for Courier's API. Keep one per event loop and `await aclose()` it (or `async with`).

    Options (`ClientOptions`): `timeout` (10 s) bounds each try; `max_retries` (5) and `deadline` (60 s) bound
    the retries, or `retry=RetryPolicy(...)` sets them all; `trace` (True) sends the current OpenTelemetry span
    as `traceparent` when `opentelemetry-api` is installed. The URL and key default to `COURIER_URL` and
    `COURIER_API_KEY`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        http_client: httpx.AsyncClient | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        self._settings = _api.Settings.resolve(base_url, api_key, options)
        self._owns_http = http_client is None
        self._http = self._settings.configure(http_client or httpx.AsyncClient())
        self.webhooks = Webhooks(self)
        self.deliveries = Deliveries(self)
        self.events = Events(self)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncCourier:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _run(self, call: Call[T]) -> T:
        tries = self._settings.tries(call)
        while True:
            request = call.request(self._http, tries.next_timeout())
            try:
                response = await self._http.send(request)
            except httpx.TransportError as exc:
                wait = tries.after_exception(exc)
            else:
                result = _api.settle(call, tries, response)
                if isinstance(result, Done):
                    return result.value
                wait = result
            await asyncio.sleep(wait)

    async def send(
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
        return await self.send_event(Event(type, dict(data), id, created), traceparent=traceparent)

    async def send_event(self, event: Event | Mapping[str, Any], *, traceparent: str | None = None) -> Accepted:
        """`send` for an `Event` (e.g. from `courier_client.events.call_completed(...)`), which keeps its id."""
        return await self._run(_api.send_event(event, self._settings.trace_headers(traceparent)))

    async def send_batch(
        self, events: Iterable[Event | Mapping[str, Any]], *, traceparent: str | None = None
    ) -> list[ItemResult]:
        """Store any number of events in requests of up to 1,000; one result per input, in order.

        Each event gets its id before its request's first try. A request that fails as a whole is retried (same ids,
        same body); one that still fails marks each of its items with that error (`ItemResult.retryable`), while
        an item the server refused carries its own error. A refused key (401, 403) raises.
        """
        headers = self._settings.trace_headers(traceparent)
        results: list[ItemResult] = []
        for chunk in _api.plan_batch(events):
            try:
                answered = await self._run(_api.send_chunk(chunk, headers))
                results += answered
            except CourierError as error:
                results += _api.chunk_failed(chunk, error)
        return results

    async def portal_session(self, scopes: Sequence[str], expires_in: int | None = None) -> PortalSession:
        """A single-use magic link into the tenant portal with some of this key's scopes (60 s to 24 h)."""
        return await self._run(_api.portal_session(scopes, expires_in))


class Webhooks:
    """`client.webhooks`: the tenant's endpoints."""

    def __init__(self, client: AsyncCourier) -> None:
        self._client = client

    async def create(self, *, url: str, **options: Unpack[WebhookOptions]) -> Webhook:
        """A new webhook; its `secret` is in this answer only, so store it now."""
        return await self._client._run(_api.create_webhook(url, options))

    async def get(self, webhook_id: str) -> Webhook:
        return await self._client._run(_api.get_webhook(webhook_id))

    async def list(self, *, limit: int | None = None, cursor: str | None = None) -> Page[Webhook]:
        return await self._client._run(_api.list_webhooks(limit, cursor))

    def iter(self, *, page_size: int = 100) -> AsyncIterator[Webhook]:
        """Every webhook, newest first, following the pages."""
        return _follow(lambda cursor: self.list(limit=page_size, cursor=cursor))

    async def update(self, webhook_id: str, **changes: Unpack[WebhookChanges]) -> Webhook:
        """Change the fields given; `None` clears `description` and `rate_limit_per_second`."""
        return await self._client._run(_api.update_webhook(webhook_id, changes))

    async def delete(self, webhook_id: str) -> None:
        await self._client._run(_api.delete_webhook(webhook_id))

    async def rotate(self, webhook_id: str) -> Webhook:
        """A new secret (in the answer's `secret`); the old one keeps signing beside it for the grace period."""
        return await self._client._run(_api.rotate_secret(webhook_id))


class Deliveries:
    """`client.deliveries`: the delivery log and replays."""

    def __init__(self, client: AsyncCourier) -> None:
        self._client = client

    async def list(
        self, *, limit: int | None = None, cursor: str | None = None, **filters: Unpack[DeliveryFilters]
    ) -> Page[Delivery]:
        """One page, newest first. A filtered page may be short, even empty, and still have a `next_cursor`."""
        return await self._client._run(_api.list_deliveries(filters, limit, cursor))

    def iter(self, *, page_size: int = 100, **filters: Unpack[DeliveryFilters]) -> AsyncIterator[Delivery]:
        """Every matching delivery, newest first, following the pages."""
        return _follow(lambda cursor: self._client._run(_api.list_deliveries(filters, page_size, cursor)))

    async def get(self, delivery_id: str) -> Delivery:
        """One delivery with all its attempts."""
        return await self._client._run(_api.get_delivery(delivery_id))

    async def replay(self, delivery_id: str) -> Delivery:
        """A new delivery of the same event to the same webhook (`replay_of` the old one)."""
        return await self._client._run(_api.replay_delivery(delivery_id))

    async def replay_bulk(self, **filters: Unpack[ReplayFilters]) -> AsyncReplayJob:
        """Queue a bulk replay job (of `failed` deliveries unless `status` says otherwise); `wait()` follows it."""
        return AsyncReplayJob(self._client, await self._client._run(_api.replay_bulk(filters)))

    async def count_replay(self, **filters: Unpack[ReplayFilters]) -> int:
        """How many deliveries `replay_bulk` with these filters would queue now (a dry run)."""
        return await self._client._run(_api.replay_bulk_dry_run(filters))

    async def replay_job(self, replay_id: str) -> AsyncReplayJob:
        return AsyncReplayJob(self._client, await self._client._run(_api.get_replay(replay_id)))


class Events:
    """`client.events`: stored events read back."""

    def __init__(self, client: AsyncCourier) -> None:
        self._client = client

    async def get(self, event_id: str) -> EventRecord:
        """The event with its deliveries."""
        return await self._client._run(_api.get_event(event_id))

    async def list(self, *, limit: int | None = None, cursor: str | None = None) -> Page[EventRecord]:
        return await self._client._run(_api.list_events(limit, cursor))

    def iter(self, *, page_size: int = 100) -> AsyncIterator[EventRecord]:
        return _follow(lambda cursor: self.list(limit=page_size, cursor=cursor))


class AsyncReplayJob:
    """A bulk replay job; `state` is what was last read."""

    def __init__(self, client: AsyncCourier, state: ReplayState) -> None:
        self._client = client
        self.state = state

    @property
    def id(self) -> str:
        return self.state.id

    async def refresh(self) -> ReplayState:
        self.state = await self._client._run(_api.get_replay(self.state.id))
        return self.state

    async def wait(self, *, timeout: float = 300.0, interval: float = 0.5) -> ReplayState:
        """Poll until the job is `finished` or `failed` (its `error` says why); `TimeoutError` past `timeout`."""
        deadline = time.monotonic() + timeout
        while not self.state.done:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"replay {self.state.id} still {self.state.status} after {timeout} s")
            await asyncio.sleep(interval)
            await self.refresh()
        return self.state


async def _follow(fetch: Callable[[str | None], Awaitable[Page[T]]]) -> AsyncIterator[T]:
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        for item in page.data:
            yield item
        if page.next_cursor is None:
            return
        cursor = page.next_cursor

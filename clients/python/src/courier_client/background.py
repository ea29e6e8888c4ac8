"""`BackgroundSender`: hand events over in microseconds from hot paths; one thread sends them in batches.

Events wait in a bounded queue. The sender thread takes up to `max_batch` of them, or what came within
`flush_interval` of the first, and sends them with `Courier.send_batch` (ids made at `submit`, so every retry is
idempotent). When the queue is full, `submit` blocks (`overflow="block"`, optionally up to `block_timeout`) or
raises `QueueFullError` (`overflow="raise"`): an event is never dropped silently. `flush()` waits until everything
submitted before it was answered and reports what failed; `close()` (also run at interpreter exit) flushes and
stops the thread. `AsyncBackgroundSender` does the same on an asyncio loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from .async_client import AsyncCourier
from .client import Courier
from .errors import CourierError, QueueFullError
from .events import Event
from .models import ItemResult

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AsyncBackgroundSender", "BackgroundSender", "FlushReport", "SenderOptions"]

log = logging.getLogger("courier_client")


@dataclass
class FlushReport:
    """What was answered since the previous flush: how many events were stored, and the ones that were not.

    Each failed `ItemResult` names its event by `id` (its `index` is its place in the batch it went in).
    """

    sent: int = 0
    failed: list[ItemResult] = field(default_factory=list)


class SenderOptions(TypedDict, total=False):
    """What both senders take beside the client."""

    #: Events per request at most (500; 1 to 1,000).
    max_batch: int
    #: Seconds a batch waits for more events after its first (0.2); `flush()` cuts it short.
    flush_interval: float
    #: Events the queue holds at most (10,000).
    max_queue: int
    #: What `submit` does when the queue is full: `"block"` (the default) waits for room, `"raise"` raises.
    overflow: Literal["block", "raise"]
    #: Under `"block"`, the longest `submit` waits before raising `QueueFullError` (`None`: no limit).
    block_timeout: float | None
    #: Called with each batch's failed results (on the sender's thread or task); they are in `flush()`'s report too.
    on_error: Callable[[list[ItemResult]], None] | None


@dataclass(frozen=True)
class _Options:
    max_batch: int = 500
    flush_interval: float = 0.2
    max_queue: int = 10_000
    overflow: Literal["block", "raise"] = "block"
    block_timeout: float | None = None
    on_error: Callable[[list[ItemResult]], None] | None = None

    @classmethod
    def of(cls, options: SenderOptions) -> _Options:
        unknown = sorted(set(options) - set(SenderOptions.__annotations__))
        if unknown:
            raise TypeError(f"unexpected argument(s): {', '.join(unknown)}")
        if options.get("overflow", "block") not in ("block", "raise"):
            raise ValueError("overflow must be 'block' or 'raise'")
        chosen = cls(**options)
        return replace(chosen, max_batch=max(1, min(chosen.max_batch, 1000)))


class BackgroundSender:
    """Buffers events from any number of threads and sends them in batches on one background thread.

    `on_error` is called (on the sender thread) with the results of each batch that had failures; they are also
    kept for the next `flush()`'s report. Use it as a context manager, or call `close()`.
    """

    def __init__(self, client: Courier, *, exit_timeout: float = 30.0, **options: Unpack[SenderOptions]) -> None:
        self._client = client
        self._options = _Options.of(options)
        self._queue: queue.Queue[Event] = queue.Queue(maxsize=self._options.max_queue)
        self._lock = threading.Condition()
        self._submitted = 0
        self._answered = 0
        self._report = FlushReport()
        self._flush_now = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="courier-background-sender", daemon=True)
        self._thread.start()
        # A weak reference, so registering for exit does not keep an abandoned sender alive.
        ref = weakref.ref(self)
        self._atexit = lambda: _close_at_exit(ref, exit_timeout)
        atexit.register(self._atexit)

    def submit(self, event: Event | Mapping[str, Any]) -> str:
        """Queue one event and return its id (made now, so it is stable whatever happens next)."""
        item = Event.coerce(event).with_id()
        assert item.id is not None
        _check_json(item)
        # Counted before it is queued, under the lock `close` takes: an event `submit` returns for is one `close`
        # waits for, however the two race.
        with self._lock:
            if self._closed:
                raise RuntimeError("this BackgroundSender is closed")
            self._submitted += 1
        try:
            if self._options.overflow == "raise":
                self._queue.put_nowait(item)
            else:
                self._queue.put(item, timeout=self._options.block_timeout)
        except queue.Full:
            with self._lock:
                self._submitted -= 1
                self._lock.notify_all()
            raise QueueFullError(f"the queue holds {self._queue.maxsize} events already") from None
        return item.id

    def send(self, type: str, data: Mapping[str, Any], *, id: str | None = None, created: int | None = None) -> str:
        """`submit` for a type and data, like `Courier.send`."""
        return self.submit(Event(type, dict(data), id, created))

    def flush(self, timeout: float | None = None) -> FlushReport:
        """Send what is queued now and wait until every event submitted before this call was answered.

        Returns what was answered since the previous flush; raises `TimeoutError` past `timeout` (the events
        stay queued and are still sent).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._submitted
            self._flush_now.set()
            while self._answered < target:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"{target - self._answered} events still unanswered after {timeout} s")
                self._lock.wait(left)
            report, self._report = self._report, FlushReport()
        return report

    def close(self, timeout: float | None = None) -> FlushReport:
        """Refuse new events, send every one submitted so far, then stop the sender thread."""
        with self._lock:
            if self._closed:
                return FlushReport()
            self._closed = True
        report = self.flush(timeout)
        self._flush_now.set()
        self._thread.join(timeout)
        atexit.unregister(self._atexit)
        return report

    def __enter__(self) -> BackgroundSender:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def answered(self) -> int:
        """Events answered so far (stored or failed)."""
        with self._lock:
            return self._answered

    @property
    def pending(self) -> int:
        """Events submitted and not yet answered."""
        with self._lock:
            return self._submitted - self._answered

    def _take_batch(self) -> list[Event]:
        """Up to `max_batch` events: waits for a first one, then for more until the interval or a flush."""
        batch: list[Event] = []
        while not batch:
            if self._closed and self._queue.empty() and self.pending == 0:
                return batch
            try:
                batch.append(self._queue.get(timeout=0.05))
            except queue.Empty:
                continue
        window_ends = time.monotonic() + self._options.flush_interval
        while len(batch) < self._options.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            left = window_ends - time.monotonic()
            if left <= 0 or self._flush_now.is_set():
                break
            try:
                batch.append(self._queue.get(timeout=min(left, 0.01)))
            except queue.Empty:
                continue
        return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                return
            if self._queue.empty():
                self._flush_now.clear()
            try:
                results = self._client.send_batch(batch)
            except Exception as error:  # the thread must outlive anything and report it
                results = _whole_batch_failed(batch, error)
            failed = _failures(batch, results, self._options.on_error)
            with self._lock:
                self._answered += len(batch)
                self._report.sent += len(batch) - len(failed)
                self._report.failed.extend(failed)
                self._lock.notify_all()


def _check_json(event: Event) -> None:
    """Refuses, at `submit`, data JSON cannot carry (a `datetime`, a set): later it would fail a whole batch."""
    try:
        json.dumps(event.data, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"event {event.id}: its data is not JSON: {error}") from None


def _close_at_exit(ref: weakref.ref[BackgroundSender], timeout: float) -> None:
    sender = ref()
    if sender is not None:
        try:
            sender.close(timeout)
        except TimeoutError:
            log.error("courier: %d events were still unsent at exit", sender.pending)


def _whole_batch_failed(batch: list[Event], error: Exception) -> list[ItemResult]:
    """Every event of a batch `send_batch` raised for: a refused key, or something unexpected (logged)."""
    if not isinstance(error, CourierError):
        log.exception("courier: sending a batch failed")
        error = CourierError(f"sending failed: {error!r}")
    return [ItemResult(i, e.id or "", error=error) for i, e in enumerate(batch)]


def _failures(
    batch: list[Event], results: list[ItemResult], on_error: Callable[[list[ItemResult]], None] | None
) -> list[ItemResult]:
    """The results that failed, logged and handed to `on_error` (whose own failure is logged, never raised)."""
    failed = [r for r in results if not r.ok]
    if failed:
        log.warning("courier: %d of %d events were not stored: %s", len(failed), len(batch), failed[0].error)
        if on_error is not None:
            try:
                on_error(failed)
            except Exception:
                log.exception("courier: on_error raised")
    return failed


class AsyncBackgroundSender:
    """`BackgroundSender` for asyncio: tasks `await submit(...)`; one task sends the batches on the running loop.

    The same batching, bounded queue and overflow policy (`"block"` waits for room, up to `block_timeout`;
    `"raise"` raises `QueueFullError`). There is no flush at interpreter exit: use `async with`, or
    `await aclose()` before the loop ends.
    """

    def __init__(self, client: AsyncCourier, **options: Unpack[SenderOptions]) -> None:
        self._client = client
        self._options = _Options.of(options)
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=self._options.max_queue)
        self._changed = asyncio.Condition()
        self._flush_now = asyncio.Event()
        self._submitted = 0
        self._answered = 0
        self._report = FlushReport()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, event: Event | Mapping[str, Any]) -> str:
        """Queue one event and return its id (made now)."""
        if self._closed:
            raise RuntimeError("this AsyncBackgroundSender is closed")
        item = Event.coerce(event).with_id()
        assert item.id is not None
        _check_json(item)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="courier-background-sender")
        try:
            if self._options.overflow == "raise":
                self._queue.put_nowait(item)
            else:
                await asyncio.wait_for(self._queue.put(item), self._options.block_timeout)
        except (asyncio.QueueFull, asyncio.TimeoutError):
            raise QueueFullError(f"the queue holds {self._queue.maxsize} events already") from None
        self._submitted += 1
        if self._closed:
            # `aclose` began while this one waited for room: it is queued and counted, so send it too.
            await self.flush()
        return item.id

    async def flush(self, timeout: float | None = None) -> FlushReport:
        """Send what is queued now and wait until every event submitted before this call was answered."""
        target = self._submitted
        self._flush_now.set()
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self._answered >= target), timeout)
            report, self._report = self._report, FlushReport()
        return report

    async def aclose(self, timeout: float | None = None) -> FlushReport:
        """Refuse new events, send every one submitted so far, then stop the sending task (which is idle by then:
        it is cancelled only between batches, never during one)."""
        if self._closed:
            return FlushReport()
        self._closed = True
        report = await self.flush(timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return report

    async def __aenter__(self) -> AsyncBackgroundSender:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _take_batch(self) -> list[Event]:
        batch = [await self._queue.get()]
        window_ends = time.monotonic() + self._options.flush_interval
        while len(batch) < self._options.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            if time.monotonic() >= window_ends or self._flush_now.is_set():
                break
            # Polls rather than `wait_for(queue.get())`, which can lose an item when its timeout fires (< 3.12).
            await asyncio.sleep(0.005)
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._take_batch()
            if self._queue.empty():
                self._flush_now.clear()
            try:
                results = await self._client.send_batch(batch)
            except Exception as error:  # the task must outlive anything and report it
                results = _whole_batch_failed(batch, error)
            failed = _failures(batch, results, self._options.on_error)
            async with self._changed:
                self._answered += len(batch)
                self._report.sent += len(batch) - len(failed)
                self._report.failed.extend(failed)
                self._changed.notify_all()

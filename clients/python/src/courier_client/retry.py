"""When to try a request again, and how long to wait first.

Retried: connection errors, timeouts, 408, 429 and every 5xx; a 429 or 503 with `Retry-After` waits exactly
what the server asked. Otherwise the wait is "full jitter" exponential backoff: a uniformly random time between 0
and `min(max_backoff, initial_backoff * 2 ** (retry - 1))`, so many clients refused at once do not come back at
once. Every try and every wait fit in `deadline` seconds from the first try: a wait that would pass it is not
waited, and the last error is raised at once. No other 4xx is ever retried (409 included).

A request that is not idempotent (creating a webhook, minting a portal link, a replay) is retried only when it
cannot have been carried out: the connection was refused, or the server answered 429 (its rate limit answers
before anything is done). A 503 can come from a commit whose outcome the server could not learn, so it is retried
only for idempotent requests (every event send is: its id is fixed before the first try).
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from .errors import APIError, TransportError, error_from_response

__all__ = ["RetryPolicy"]

#: Statuses that mean the server did not carry the request out, so even a non-idempotent request may go again.
NOT_DONE_STATUSES = frozenset({429})
#: Statuses whose `Retry-After` says exactly when to come back.
RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """How many tries, how far apart, within how long. Immutable; share one between clients."""

    #: Retries after the first try (so at most `max_retries + 1` tries).
    max_retries: int = 5
    #: The backoff's first ceiling, in seconds; it doubles per retry.
    initial_backoff: float = 0.5
    #: The largest backoff ceiling, in seconds.
    max_backoff: float = 8.0
    #: Seconds from the first try after which no further try starts; each try's timeout is cut to fit too.
    deadline: float = 60.0
    #: The jitter source, a number in [0, 1); tests pass `lambda: 1.0` to make waits exact.
    jitter: Callable[[], float] = field(default=random.random, compare=False)

    def backoff(self, retry: int) -> float:
        """The wait before retry number `retry` (1-based) when the server named none."""
        ceiling = min(self.max_backoff, self.initial_backoff * 2.0 ** (retry - 1))
        return float(self.jitter()) * ceiling


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date; `None` when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _connection_never_made(exc: httpx.TransportError) -> bool:
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))


class Tries:
    """One request's tries: decides after each failure whether to wait and go again, or to raise.

    Shared by the sync and async clients, which differ only in how they sleep.
    """

    def __init__(self, policy: RetryPolicy, *, idempotent: bool, timeout: float | None) -> None:
        self.policy = policy
        self.idempotent = idempotent
        self.timeout = timeout
        self.started = time.monotonic()
        self.count = 0
        #: True once a try failed in a way that may have carried the request out (its answer was lost).
        self.maybe_done = False
        #: The waits taken between tries, in seconds.
        self.waits: list[float] = []

    def next_timeout(self) -> float | None:
        """The timeout of the coming try: the client's, cut to what is left of the deadline."""
        self.count += 1
        left = self.policy.deadline - (time.monotonic() - self.started)
        if self.timeout is None:
            return max(left, 0.001)
        return max(min(self.timeout, left), 0.001)

    def after_exception(self, exc: httpx.TransportError) -> float:
        """The wait before the next try after `exc`, or raises `TransportError` from it."""
        never_made = _connection_never_made(exc)
        if not never_made:
            self.maybe_done = True
        kind = type(exc).__name__
        error = TransportError(f"{kind} after {self.count} tries: {exc}", tries=self.count)
        if not (self.idempotent or never_made):
            raise error from exc
        wait = self._wait(None)
        if wait is None:
            raise error from exc
        return wait

    def after_response(self, response: httpx.Response) -> float:
        """The wait before the next try after an error answer, or raises the answer's exception."""
        status = response.status_code
        retry_after = parse_retry_after(response.headers.get("retry-after")) if status in RETRY_AFTER_STATUSES else None
        retryable = status in NOT_DONE_STATUSES or (self.idempotent and (status == 408 or status >= 500))
        if status not in NOT_DONE_STATUSES and status >= 500:
            self.maybe_done = True
        wait = self._wait(retry_after) if retryable else None
        if wait is None:
            raise self.error(response, retry_after)
        return wait

    def error(self, response: httpx.Response, retry_after: float | None = None) -> APIError:
        return error_from_response(
            response.status_code, response.content, response.headers.get("x-request-id"), retry_after, self.count
        )

    def _wait(self, retry_after: float | None) -> float | None:
        if self.count > self.policy.max_retries:
            return None
        wait = retry_after if retry_after is not None else self.policy.backoff(self.count)
        if time.monotonic() - self.started + wait >= self.policy.deadline:
            return None
        self.waits.append(wait)
        return wait

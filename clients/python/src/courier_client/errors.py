"""The exceptions the client raises.

Courier answers every error as `{"error": {"code", "message", "details": [{"field", "message"}]}}` with a status;
each maps to one class below, carrying the code, the message, the per-field details and the `X-Request-Id` of the
answer (quote it when you ask us about a failure: the server logged the cause under it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "APIError",
    "AuthenticationError",
    "ConflictError",
    "CourierError",
    "ErrorDetail",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionError",
    "QueueFullError",
    "RateLimitError",
    "ServerError",
    "SignatureError",
    "TransportError",
    "ValidationError",
]


@dataclass(frozen=True)
class ErrorDetail:
    """One problem with one field of the input, e.g. `events[3].type`."""

    field: str
    message: str


class CourierError(Exception):
    """The root of every exception this package raises."""


class TransportError(CourierError):
    """No answer came: the connection failed, broke or timed out on every try (the cause is `__cause__`).

    The request may or may not have reached the server; an event sent again with the same id is stored once.
    """

    def __init__(self, message: str, *, tries: int) -> None:
        super().__init__(message)
        self.tries = tries


class APIError(CourierError):
    """Courier answered with an error status; the base of the specific classes below."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None,
        code: str,
        details: list[ErrorDetail] | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        tries: int = 1,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.details = details or []
        self.request_id = request_id
        self.retry_after = retry_after
        self.tries = tries

    def __str__(self) -> str:
        where = f"HTTP {self.status_code} " if self.status_code is not None else ""
        request = f" (request {self.request_id})" if self.request_id else ""
        fields = "".join(f"; {d.field}: {d.message}" for d in self.details) if len(self.details) > 1 else ""
        return f"{where}{self.code}: {self.message}{fields}{request}"


class ValidationError(APIError):
    """400 malformed JSON or 422 invalid input; `details` names each bad field."""


class PayloadTooLargeError(ValidationError):
    """413: the body is over the server's limit (256 KiB of `data` per event)."""


class AuthenticationError(APIError):
    """401: the API key is missing, unknown or revoked."""


class PermissionError(APIError):
    """403: the key lacks the scope the call needs (the message names it).

    Named as the API's error is; it is not the built-in `PermissionError` (an `OSError`), so an `except OSError`
    around file handling never swallows it. Import it from `courier_client`.
    """


class NotFoundError(APIError):
    """404: no such object for this key's tenant (another tenant's ids answer 404 too)."""


class ConflictError(APIError):
    """409: this event id was already used for a different event (never retried)."""


class RateLimitError(APIError):
    """429 on the last try; `retry_after` is what the server asked for."""


class ServerError(APIError):
    """408, 5xx (503: the database is unavailable or busy) on the last try."""


class SignatureError(CourierError):
    """A webhook request failed verification; `reason` says why in one word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class QueueFullError(CourierError):
    """`BackgroundSender.submit` found its queue full under the `raise` overflow policy (or waited past its timeout)."""


_BY_CODE: dict[str, type[APIError]] = {
    "invalid_request": ValidationError,
    "validation_failed": ValidationError,
    "payload_too_large": PayloadTooLargeError,
    "unauthorized": AuthenticationError,
    "forbidden": PermissionError,
    "not_found": NotFoundError,
    "conflict": ConflictError,
    "rate_limited": RateLimitError,
    "service_unavailable": ServerError,
    "internal_error": ServerError,
}

_BY_STATUS: dict[int, type[APIError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionError,
    404: NotFoundError,
    408: ServerError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitError,
}


def error_from_body(
    body: Mapping[str, Any] | None,
    *,
    status_code: int | None,
    request_id: str | None,
    retry_after: float | None = None,
    tries: int = 1,
) -> APIError:
    """The exception for one error object (a whole answer's, or one batch item's with `status_code=None`)."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping):
        code = str(error.get("code", "unknown"))
        message = str(error.get("message", ""))
        raw_details = error.get("details")
        details = [
            ErrorDetail(str(d.get("field", "")), str(d.get("message", "")))
            for d in (raw_details if isinstance(raw_details, list) else [])
            if isinstance(d, Mapping)
        ]
    else:
        code, message, details = "unknown", f"HTTP {status_code} without an error body", []
    cls = _BY_CODE.get(code)
    if cls is None and status_code is not None:
        cls = _BY_STATUS.get(status_code, ServerError if status_code >= 500 else APIError)
    return (cls or APIError)(
        message,
        status_code=status_code,
        code=code,
        details=details,
        request_id=request_id,
        retry_after=retry_after,
        tries=tries,
    )


def error_from_response(
    status_code: int, content: bytes, request_id: str | None, retry_after: float | None, tries: int
) -> APIError:
    """The exception for an error answer, whatever its body (a proxy's HTML page maps by status alone)."""
    try:
        body = json.loads(content) if content else None
    except ValueError:
        body = None
    return error_from_body(
        body if isinstance(body, Mapping) else None,
        status_code=status_code,
        request_id=request_id,
        retry_after=retry_after,
        tries=tries,
    )

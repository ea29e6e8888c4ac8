"""courier-client: emit call events into Courier, and verify what Courier delivers.

    from courier_client import Courier
    from courier_client.events import call_completed

    client = Courier("https://courier.internal", "as_live_…")
    client.send_event(call_completed(call_id="call-uuid", user_id="user-123", duration_seconds=180))

See the README beside this package for the whole guide.
"""

from .async_client import AsyncCourier, AsyncReplayJob
from .background import AsyncBackgroundSender, BackgroundSender, FlushReport
from .client import Courier, ReplayJob
from .errors import (
    APIError,
    AuthenticationError,
    ConflictError,
    CourierError,
    ErrorDetail,
    NotFoundError,
    PayloadTooLargeError,
    PermissionError,
    QueueFullError,
    RateLimitError,
    ServerError,
    SignatureError,
    TransportError,
    ValidationError,
)
from .events import Event, new_event_id
from .models import (
    Accepted,
    Attempt,
    Delivery,
    EventRecord,
    ItemResult,
    Page,
    PortalSession,
    ReplayState,
    Webhook,
    WebhookFilter,
)
from .retry import RetryPolicy
from .verify import verify

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "Accepted",
    "AsyncBackgroundSender",
    "AsyncCourier",
    "AsyncReplayJob",
    "Attempt",
    "AuthenticationError",
    "BackgroundSender",
    "ConflictError",
    "Courier",
    "CourierError",
    "Delivery",
    "ErrorDetail",
    "Event",
    "EventRecord",
    "FlushReport",
    "ItemResult",
    "NotFoundError",
    "Page",
    "PayloadTooLargeError",
    "PermissionError",
    "PortalSession",
    "QueueFullError",
    "RateLimitError",
    "ReplayJob",
    "ReplayState",
    "RetryPolicy",
    "ServerError",
    "SignatureError",
    "TransportError",
    "ValidationError",
    "Webhook",
    "WebhookFilter",
    "new_event_id",
    "verify",
]

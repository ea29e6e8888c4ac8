"""Verify a webhook request Courier sent, in the receiver.

Courier signs every request twice (DESIGN.md §3.4):
- `X-Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over `"{t}.{raw body}"`, keyed by the whole
  secret string (`whsec_…`) as UTF-8: what the integration guide's `verify_signature` checks. During a secret
  rotation it carries one `v1=` per live secret; any of them may match.
- Standard Webhooks: `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256>` over
  `"{id}.{timestamp}.{raw body}"`, keyed by the base64-decoded part of the secret after `whsec_`.

`verify` checks the guide's header when it is present, else the Standard Webhooks ones.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import SignatureError

__all__ = ["verify"]

#: Seconds a signature's timestamp may differ from now, as in the guide (5 minutes).
DEFAULT_TOLERANCE = 300.0


def verify(
    payload: bytes,
    headers: Mapping[str, str],
    secret: str | Sequence[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> Any:
    """Check a request's signature and return its parsed JSON body; raise `SignatureError` otherwise.

    `payload` is the raw body exactly as received (parse it only after this). `secret` may be a list, to accept
    a request signed with any of them (your side of a rotation). The reasons: `missing_header`,
    `malformed_header`, `stale_timestamp` (off by more than `tolerance` seconds), `mismatch`, `malformed_secret`
    (not `whsec_` + base64, for the standard scheme) and `malformed_body` (signed, but not JSON).
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets:
        raise ValueError("no secret given")
    at = time.time() if now is None else now
    if "x-webhook-signature" in lowered:
        _verify_guide(payload, lowered["x-webhook-signature"], secrets, tolerance, at)
    elif "webhook-signature" in lowered:
        _verify_standard(payload, lowered, secrets, tolerance, at)
    else:
        raise SignatureError("missing_header", "neither X-Webhook-Signature nor webhook-signature is present")
    try:
        return json.loads(payload)
    except ValueError as exc:
        raise SignatureError("malformed_body", f"the signed body is not JSON: {exc}") from exc


def _check_timestamp(raw: str, tolerance: float, now: float) -> int:
    try:
        timestamp = int(raw)
    except ValueError:
        raise SignatureError("malformed_header", f"timestamp {raw!r} is not an integer") from None
    if abs(now - timestamp) > tolerance:
        raise SignatureError("stale_timestamp", f"signed at {timestamp}, {abs(now - timestamp):.0f} s from now")
    return timestamp


def _same(expected: str, candidate: str) -> bool:
    """Constant-time equality as bytes: a header may carry any characters, which `compare_digest` refuses as str."""
    return hmac.compare_digest(expected.encode(), candidate.encode("utf-8", "replace"))


def _verify_guide(payload: bytes, header: str, secrets: list[str], tolerance: float, now: float) -> None:
    timestamps: list[str] = []
    signatures: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError("malformed_header", f"X-Webhook-Signature part {part!r} is not name=value")
        if name == "t":
            timestamps.append(value)
        elif name == "v1":
            signatures.append(value)
    if len(timestamps) != 1 or not signatures:
        raise SignatureError("malformed_header", "X-Webhook-Signature needs one t= and at least one v1=")
    timestamp = _check_timestamp(timestamps[0], tolerance, now)
    signed = f"{timestamp}.".encode() + payload
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        if any(_same(expected, candidate) for candidate in signatures):
            return
    raise SignatureError("mismatch", "no v1 signature matches the body and secret")


def _verify_standard(
    payload: bytes, headers: Mapping[str, str], secrets: list[str], tolerance: float, now: float
) -> None:
    message_id = headers.get("webhook-id")
    raw_timestamp = headers.get("webhook-timestamp")
    if message_id is None or raw_timestamp is None:
        raise SignatureError("missing_header", "webhook-signature needs webhook-id and webhook-timestamp")
    timestamp = _check_timestamp(raw_timestamp, tolerance, now)
    signed = f"{message_id}.{timestamp}.".encode() + payload
    candidates = [
        sig for version, _, sig in (p.partition(",") for p in headers["webhook-signature"].split()) if version == "v1"
    ]
    if not candidates:
        raise SignatureError("malformed_header", "webhook-signature has no v1,<signature>")
    for secret in secrets:
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            raise SignatureError("malformed_secret", "the secret is not whsec_ + base64") from None
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        if any(_same(expected, candidate) for candidate in candidates):
            return
    raise SignatureError("mismatch", "no v1 signature matches the body and secret")

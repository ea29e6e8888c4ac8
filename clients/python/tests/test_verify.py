"""`courier_client.verify` on what Courier really sent: both signature schemes accepted, every forgery refused."""

from __future__ import annotations

import pytest

from courier_client import Courier, SignatureError, events, verify

from .support import Received, Receiver


@pytest.fixture
def delivered(client: Courier, receiver: Receiver) -> tuple[Received, str]:
    url = receiver.endpoint("")
    hook = client.webhooks.create(url=url, filter={"include_transcript": True})
    assert hook.secret is not None
    receiver.add_secret(url, hook.secret)
    transcript: list[events.TranscriptEntry] = [{"role": "user", "content": "Grüße, ça va? 你好"}]  # non-ASCII too
    client.send_event(events.call_completed(call_id="v-1", transcript=transcript))
    (request,) = receiver.wait_for(url, 1)
    return request, hook.secret


def reason(payload: bytes, headers: dict[str, str], secret: str, **options: float) -> str:
    with pytest.raises(SignatureError) as refused:
        verify(payload, headers, secret, **options)
    return refused.value.reason


def test_accepts_courier_requests_under_either_scheme(delivered: tuple[Received, str]) -> None:
    request, secret = delivered
    assert request.guide_ok
    envelope = verify(request.body, request.headers, secret)
    assert envelope["event"]["data"]["call_id"] == "v-1"
    standard_only = {k: v for k, v in request.headers.items() if k != "x-webhook-signature"}
    assert verify(request.body, standard_only, secret)["event"]["id"] == request.event_id
    # Header names are case-insensitive, as HTTP says.
    shouted = {k.upper(): v for k, v in request.headers.items()}
    assert verify(request.body, shouted, [secret])["event"]["id"] == request.event_id
    # Any of several secrets (a receiver's own rotation).
    assert verify(request.body, request.headers, ["whsec_" + "B" * 43 + "=", secret])["event"]["id"]
    assert verify(request.body, standard_only, ["whsec_" + "B" * 43 + "=", secret])["event"]["id"]


def test_refuses_tampered_bodies_wrong_secrets_stale_timestamps_and_missing_headers(
    delivered: tuple[Received, str],
) -> None:
    request, secret = delivered
    standard_only = {k: v for k, v in request.headers.items() if k != "x-webhook-signature"}
    tampered = request.body.replace(b'"v-1"', b'"v-2"')
    assert tampered != request.body
    other_secret = "whsec_" + "A" * 43 + "="
    signed_at = int(request.headers["webhook-timestamp"])
    for headers in (request.headers, standard_only):
        assert reason(tampered, headers, secret) == "mismatch"
        assert reason(request.body, headers, other_secret) == "mismatch"
        assert reason(request.body, headers, secret, now=signed_at + 301) == "stale_timestamp"
        assert reason(request.body, headers, secret, now=signed_at - 301) == "stale_timestamp"
        verify(request.body, headers, secret, now=signed_at + 299)
        assert reason(request.body, headers, secret, now=signed_at + 60, tolerance=30) == "stale_timestamp"
    assert reason(request.body, {"content-type": "application/json"}, secret) == "missing_header"
    assert reason(request.body, {"x-webhook-signature": "v1=abc"}, secret) == "malformed_header"
    assert reason(request.body, {"x-webhook-signature": "garbage"}, secret) == "malformed_header"
    no_id = {k: v for k, v in standard_only.items() if k != "webhook-id"}
    assert reason(request.body, no_id, secret) == "missing_header"
    # Another event's id under the same signature: the standard scheme signs the id too.
    other_id = {**standard_only, "webhook-id": "evt_someone_else"}
    assert reason(request.body, other_id, secret) == "mismatch"
    # Any characters in a signature header are a mismatch, never a TypeError.
    t = request.headers["webhook-timestamp"]
    assert reason(request.body, {"x-webhook-signature": f"t={t},v1=é"}, secret, now=signed_at) == "mismatch"
    odd = {**standard_only, "webhook-signature": "v1,ü"}
    assert reason(request.body, odd, secret, now=signed_at) == "mismatch"

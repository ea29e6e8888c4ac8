"""Management calls a backend needs: webhooks, the delivery log, replays and portal links."""

from __future__ import annotations

import pytest

from courier_client import Courier, NotFoundError, ValidationError, events, verify

from .support import Receiver, guide_verifier, wait_until


def test_webhooks_create_list_get_update_rotate_delete(client: Courier, receiver: Receiver) -> None:
    url = receiver.endpoint("")
    hook = client.webhooks.create(
        url=url,
        filter={"events": ["call.completed", "call.failed"], "include_transcript": True},
        description="billing",
        max_attempts=3,
        headers={"X-Api-Key": "gw-123"},
        rate_limit_per_second=50,
    )
    assert hook.id.startswith("wh_") and hook.secret and hook.secret.startswith("whsec_")
    assert hook.filter.events == ["call.completed", "call.failed"]
    assert hook.filter.include_transcript and not hook.filter.include_metrics
    assert (hook.max_attempts, hook.description, hook.rate_limit_per_second) == (3, "billing", 50)
    assert hook.headers == {"X-Api-Key": "********"}
    receiver.add_secret(url, hook.secret)

    others = [client.webhooks.create(url=receiver.endpoint("")) for _ in range(2)]
    assert client.webhooks.get(hook.id).secret is None  # shown once only
    page = client.webhooks.list(limit=2)
    assert len(page) == 2 and page.next_cursor is not None
    assert [w.id for w in client.webhooks.iter(page_size=1)] == [others[1].id, others[0].id, hook.id]

    changed = client.webhooks.update(hook.id, description=None, ordering="call", rate_limit_per_second=None)
    assert (changed.description, changed.ordering, changed.rate_limit_per_second) == (None, "call", None)
    assert changed.max_attempts == 3  # fields not given stay
    with pytest.raises(TypeError):
        client.webhooks.update(hook.id, colour="red")  # type: ignore[call-arg]
    disabled = client.webhooks.update(hook.id, status="disabled")
    assert disabled.status == "disabled" and disabled.disabled_reason == "manual"
    client.webhooks.update(hook.id, status="enabled")

    rotated = client.webhooks.rotate(hook.id)
    assert rotated.secret and rotated.secret != hook.secret and rotated.previous_secret_expires_at is not None
    receiver.add_secret(url, rotated.secret)
    sent = client.send_event(events.call_failed(call_id="rot-1", status_reason="busy"))
    (request,) = receiver.wait_for(url, 1)
    assert request.event_id == sent.id
    assert request.headers["x-webhook-signature"].count("v1=") == 2  # old and new sign side by side
    assert request.guide_ok  # the guide's verifier checks the last v1, the newest secret's
    # Ours accepts either secret alone, so a receiver can switch secrets at any time during the grace period.
    assert verify(request.body, request.headers, hook.secret)["event"]["id"] == sent.id
    assert verify(request.body, request.headers, rotated.secret)["event"]["id"] == sent.id
    assert not guide_verifier(hook.secret)(request.body, request.headers["x-webhook-signature"])

    with pytest.raises(ValidationError) as invalid:
        client.webhooks.create(url=url, filter={"events": ["call.bogus"]})
    assert invalid.value.details and invalid.value.details[0].field.startswith("filter.events")

    client.webhooks.delete(others[0].id)
    with pytest.raises(NotFoundError):
        client.webhooks.get(others[0].id)
    with pytest.raises(NotFoundError):
        client.webhooks.delete(others[0].id)  # a second delete of the same id is a real 404


def test_deliveries_filters_pages_get_replay_and_bulk_replay(client: Courier, receiver: Receiver) -> None:
    good_url = receiver.endpoint("")
    good = client.webhooks.create(url=good_url)
    failing_url = receiver.endpoint("", status=500)
    failing = client.webhooks.create(url=failing_url, max_attempts=1, filter={"events": ["call.failed"]})
    assert good.secret and failing.secret
    receiver.add_secret(good_url, good.secret)
    receiver.add_secret(failing_url, failing.secret)

    batch = [events.call_started(call_id=f"d-{i}") for i in range(5)]
    batch += [events.call_failed(call_id=f"f-{i}", status_reason="busy") for i in range(3)]
    assert all(r.ok for r in client.send_batch(batch))
    receiver.wait_for(good_url, 8)

    def failed_ones() -> list[str]:
        found = [d.id for d in client.deliveries.iter(webhook_id=failing.id, status="failed")]
        return found if len(found) == 3 else []

    failed = wait_until(failed_ones, what="three failed deliveries")

    first_page = client.deliveries.list(webhook_id=good.id, limit=3)
    assert len(first_page) == 3 and first_page.next_cursor == first_page.data[-1].id
    second_page = client.deliveries.list(webhook_id=good.id, limit=3, cursor=first_page.next_cursor)
    assert not {d.id for d in first_page} & {d.id for d in second_page}
    everything = list(client.deliveries.iter(page_size=3))
    assert len(everything) == 11 and len({d.id for d in everything}) == 11
    assert [d.created_at for d in everything] == sorted((d.created_at for d in everything), reverse=True)
    by_call = list(client.deliveries.iter(call_id="d-3"))
    assert [(d.call_id, d.webhook_id, d.event_type) for d in by_call] == [("d-3", good.id, "call.started")]
    assert {d.id for d in client.deliveries.iter(event_type="call.failed")} >= set(failed)

    one = client.deliveries.get(failed[0])
    assert one.status == "failed" and one.attempt_count == 1 and one.attempts is not None
    assert one.attempts[0].status_code == 500 and one.attempts[0].response_body == '{"status": "received"}'

    again = client.deliveries.replay(failed[0])
    assert again.replay_of == failed[0] and again.event_id == one.event_id
    # Polls the API, not the receiver: the server records the attempt only after the receiver has answered.
    wait_until(lambda: client.deliveries.get(again.id).status == "failed", what="the replay to fail")
    assert len(receiver.at(failing_url)) == 4

    # Two never replayed, and the failed replay itself; the replayed original is not taken again.
    assert client.deliveries.count_replay(webhook_id=failing.id) == 3
    job = client.deliveries.replay_bulk(webhook_id=failing.id)
    assert job.id.startswith("rpl_") and job.state.status in ("queued", "running", "finished")
    final = job.wait(timeout=60, interval=0.2)
    assert final.status == "finished" and final.replayed == 3 and final.error is None
    assert client.deliveries.replay_job(job.id).state.replayed == 3
    replays = [d for d in client.deliveries.iter(webhook_id=failing.id) if d.replay_of is not None]
    assert len(replays) == 4


def test_portal_session_links(client: Courier) -> None:
    session = client.portal_session(["webhooks:read", "deliveries:read"], expires_in=600)
    assert "/portal/login?token=" in session.url and session.id.startswith("ps_")
    assert sorted(session.scopes) == ["deliveries:read", "webhooks:read"]
    with pytest.raises(ValidationError) as too_short:
        client.portal_session(["webhooks:read"], expires_in=5)
    assert too_short.value.status_code == 422 and too_short.value.tries == 1

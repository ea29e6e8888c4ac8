"""`AsyncCourier`: the same surface as `Courier`, awaited, against the real server and the fault proxy."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import courier_client
from courier_client import AsyncCourier, ConflictError, NotFoundError, ServerError, events
from tools import unasync

from .conftest import FAST
from .support import FaultProxy, Receiver


def test_the_async_client_is_generated_from_the_sync_one() -> None:
    package = Path(courier_client.__file__).parent
    expected = unasync.generate((package / "client.py").read_text())
    assert (package / "async_client.py").read_text() == expected, "run `python -m tools.unasync` in clients/python"


def test_async_client_sends_manages_and_retries(proxy: FaultProxy, api_key: str, receiver: Receiver) -> None:
    async def scenario() -> None:
        async with AsyncCourier(proxy.url, api_key, retry=FAST) as client:
            url = receiver.endpoint("")
            hook = await client.webhooks.create(url=url, filter={"events": ["call.completed"]})
            assert hook.secret is not None
            receiver.add_secret(url, hook.secret)

            proxy.plan = ["drop", "503:1"]
            accepted = await client.send_event(events.call_completed(call_id="a-1", duration_seconds=5))
            assert accepted.tries == 3 and accepted.first_time
            bodies = {s.body for s in proxy.matching()}
            assert len(bodies) == 1  # one id, one body, three tries
            with pytest.raises(ConflictError):
                await client.send("call.completed", {"call_id": "a-2"}, id=accepted.id)

            proxy.seen.clear()
            batch = [events.call_started(call_id=f"a-{i}") for i in range(1100)]
            results = await client.send_batch(batch)
            assert [r.id for r in results] == [e.id for e in batch] and all(r.ok for r in results)
            assert [len(json.loads(s.body)["events"]) for s in proxy.matching()] == [1000, 100]

            # Ten sends at once on one client.
            many = await asyncio.gather(*(client.send("call.started", {"call_id": f"g-{i}"}) for i in range(10)))
            assert len({a.id for a in many}) == 10 and all(a.first_time for a in many)

            stored = [e.id async for e in client.events.iter()]
            assert len(stored) == len(set(stored)) == 1111
            (request,) = receiver.wait_for(url, 1)  # only call.completed is subscribed
            assert request.event_id == accepted.id and request.guide_ok
            page = await client.deliveries.list(webhook_id=hook.id, event_type="call.completed", limit=5)
            assert [d.event_id for d in page] == [accepted.id] and page.next_cursor is None
            assert len(await client.events.list(limit=7)) == 7
            deliveries = [d async for d in client.deliveries.iter(webhook_id=hook.id)]
            assert [d.event_id for d in deliveries] == [accepted.id]
            one = await client.deliveries.get(deliveries[0].id)
            for _ in range(600):  # the success is recorded only after the receiver answered
                if one.status == "succeeded":
                    break
                await asyncio.sleep(0.05)
                one = await client.deliveries.get(one.id)
            assert one.status == "succeeded" and one.attempts and one.attempts[0].status_code == 200
            replayed = await client.deliveries.replay(one.id)
            assert replayed.replay_of == one.id
            assert [w.id async for w in client.webhooks.iter()] == [hook.id]
            assert (await client.webhooks.update(hook.id, description="async")).description == "async"
            assert (await client.webhooks.rotate(hook.id)).secret not in (None, hook.secret)
            session = await client.portal_session(["deliveries:read"])
            assert "/portal/login?token=" in session.url
            assert await client.deliveries.count_replay(webhook_id=hook.id, status="cancelled") == 0
            job = await client.deliveries.replay_bulk(webhook_id=hook.id, event_types=["call.completed"])
            assert (await job.wait(timeout=60, interval=0.2)).status == "finished"
            await client.webhooks.delete(hook.id)
            with pytest.raises(NotFoundError):
                await client.webhooks.get(hook.id)

            proxy.only, proxy.plan = "/api/v1/events", ["500"] * 10
            with pytest.raises(ServerError) as failing:
                await client.send("call.started", {"call_id": "a-down"})
            assert failing.value.tries == FAST.max_retries + 1

    asyncio.run(scenario())

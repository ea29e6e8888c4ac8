-- A live delivery names its event's day itself (issue: the queue rebuilt, item 4).
--
-- The claim reads each delivery's event from the one day partition of `events` the event was received in. Until
-- now it found that day through `event_keys`: one more index probe per claimed delivery, into a table that exists
-- for idempotency, and a claim that could not deliver an event whose key was gone. Delivery ids carry their event's
-- millisecond since migration 0023, but ids made before it carry their own, and the claims that read the day out of
-- the id, with a second branch through the key for those, measured slower than the key alone (BENCHMARKS.md, bb7a6ec
-- and 6386237), for a reason those runs did not show. So the day is a column, written with the delivery and read as
-- it is.
--
-- Processes older than this migration write live deliveries without it and are refused by the check below: stop
-- them before it runs (README, "Operating Courier"). Their requests fail; nothing they accepted is lost.
--
-- `event_received_at` is the event's `received_at`, exactly (events are received to the millisecond). It is set on
-- every delivery written from now on, live or finished; finished rows written before this migration keep NULL, as
-- nothing reads it from them. Live ones are filled here, from their event's key, or from their id should the key be
-- gone (retention keeps the events and keys live deliveries need, so only a hand-edited database has such a row, and
-- its event is gone too: no claim finds it either way). The check holds the queue to it:
-- a live delivery without its event's day could never be claimed, so writing one is an error, not a stuck row.
ALTER TABLE deliveries ADD COLUMN event_received_at timestamptz;

UPDATE deliveries_live d
   SET event_received_at = COALESCE(
       (SELECT k.received_at FROM event_keys k
         WHERE k.tenant_id = d.tenant_id AND k.environment = d.environment AND k.id = d.event_id),
       courier_id_time(d.id));

ALTER TABLE deliveries_live ADD CONSTRAINT deliveries_live_event_day CHECK (event_received_at IS NOT NULL);

-- Per-call ordering: a webhook with `ordering = 'call'` gets the deliveries that share a call_id one at a time, in
-- the order their events were accepted.
--
-- * `call_seq` orders a call's deliveries to one webhook (ingest order; within a batch, array order). It is set only
--   on deliveries that take part: an ordered webhook, an event with a call_id, not a replay.
-- * A delivery whose call has an earlier live delivery to the same webhook is `waiting`: it has no due time, so the
--   claim never scans it however many wait. When its predecessor ends (succeeded, failed, cancelled) the next one
--   becomes `pending`, in the same transaction.
-- * `deliveries_chain` finds a call's deliveries to one webhook. Its predicate is a constant (so a prepared
--   statement's generic plan can use it) and it leaves out status (so state changes do not touch it): a chain is
--   one call's handful of events, so walking its finished entries costs nothing.
ALTER TABLE webhooks ADD COLUMN ordering text NOT NULL DEFAULT 'none' CHECK (ordering IN ('none', 'call'));

CREATE SEQUENCE delivery_call_seq;
ALTER TABLE deliveries ADD COLUMN call_seq bigint;

ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
    CHECK (status IN ('pending', 'delivering', 'succeeded', 'failed', 'cancelled', 'waiting')) NOT VALID;
ALTER TABLE deliveries VALIDATE CONSTRAINT deliveries_status_check;

CREATE INDEX deliveries_chain ON deliveries (webhook_id, call_id, call_seq) WHERE call_seq IS NOT NULL;

-- What a delivery sends is fixed when it is created: the webhook's payload filter (include_transcript,
-- include_metrics) at fan-out or replay is recorded with the delivery, the worker builds the envelope from it, and
-- the portal shows the payload as it was sent, not as the webhook's current filter would build it. NULL on rows
-- created before this migration (not recorded; the worker and the portal fall back to the webhook's filter).
-- Nullable without a default, so adding them rewrites no partition.
ALTER TABLE deliveries ADD COLUMN include_transcript boolean, ADD COLUMN include_metrics boolean;

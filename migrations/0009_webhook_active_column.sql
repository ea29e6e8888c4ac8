-- Whether a webhook receives deliveries, written once: fan-out, claim, replay and auto-disable all read `active`
-- instead of repeating the predicate. Stored so the fan-out index can be partial on it.
ALTER TABLE webhooks ADD COLUMN active boolean NOT NULL
    GENERATED ALWAYS AS (status = 'enabled' AND deleted_at IS NULL) STORED;

DROP INDEX webhooks_fanout;
CREATE INDEX webhooks_fanout ON webhooks (tenant_id, environment) WHERE active;

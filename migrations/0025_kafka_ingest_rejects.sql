-- Kafka records that ingest set aside instead of accepting (not JSON, not a valid event, too large, no or an unknown
-- tenant or environment, an id reused for another event, a batch it cannot read): where each was, why, and its first
-- bytes, so an operator can find it in the topic. One row per offset: a record read again after a crash or a
-- rebalance is set aside once.
CREATE TABLE ingest_rejects (
    topic        text        NOT NULL,
    "partition"  integer     NOT NULL,
    "offset"     bigint      NOT NULL,
    reason       text        NOT NULL,
    message      text        NOT NULL,
    first_bytes  bytea       NOT NULL,
    tenant_id    text,
    rejected_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, "partition", "offset")
);
CREATE INDEX ingest_rejects_rejected_at ON ingest_rejects (rejected_at);

-- Bulk replay runs as a job in the background instead of inside the request: a request never holds a connection
-- for a million inserts, and a job survives restarts (its progress is `after_id`, the last delivery considered).
-- Jobs take turns one chunk at a time (the least recently advanced first), so one tenant's big replay never holds
-- back another's; the deliveries they create are the tenant's like any other and count against its worker share.
CREATE TABLE replays (
    id              text PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    environment     text NOT NULL CHECK (environment IN ('live', 'test')),
    -- What to replay: status, webhook_id, event_types, since, until.
    filter          jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'finished')),
    -- Only deliveries created before the job are candidates, so it never replays the replays it makes.
    created_before  timestamptz NOT NULL,
    after_id        text,
    replayed        bigint NOT NULL DEFAULT 0,
    trace_parent    text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    CHECK ((status = 'finished') = (finished_at IS NOT NULL))
);
CREATE INDEX replays_open ON replays (updated_at) WHERE status <> 'finished';

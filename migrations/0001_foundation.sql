-- Tenants, their API keys, their webhook endpoints and the events they emit.
-- Forward-only: a change to this schema is a new file, never an edit.

CREATE TABLE tenants (
    id              uuid PRIMARY KEY,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- Per-tenant override of the retention period; NULL means the configured default.
    retention_days  integer CHECK (retention_days > 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id              text PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    environment     text NOT NULL CHECK (environment IN ('live', 'test')),
    -- SHA-256 of the whole key; the key itself is shown once and never stored.
    key_hash        bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    display_prefix  text NOT NULL,
    scopes          text[] NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    last_used_at    timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

CREATE TABLE webhooks (
    id                          text PRIMARY KEY,
    tenant_id                   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    environment                 text NOT NULL CHECK (environment IN ('live', 'test')),
    url                         text NOT NULL CHECK (length(url) <= 2048),
    description                 text CHECK (length(description) <= 1024),
    -- NULL means every event type.
    event_types                 text[],
    include_transcript          boolean NOT NULL DEFAULT false,
    include_metrics             boolean NOT NULL DEFAULT false,
    max_attempts                integer NOT NULL CHECK (max_attempts BETWEEN 1 AND 25),
    status                      text NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    disabled_reason             text,
    -- AES-256-GCM under the master key: 12-byte nonce followed by ciphertext and tag; the webhook id is the AAD.
    secret_ciphertext           bytea NOT NULL,
    previous_secret_ciphertext  bytea,
    previous_secret_expires_at  timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    -- Soft delete, so delivery logs keep pointing at something.
    deleted_at                  timestamptz,
    CHECK ((status = 'disabled') = (disabled_reason IS NOT NULL)),
    CHECK ((previous_secret_ciphertext IS NULL) = (previous_secret_expires_at IS NULL))
);
-- Fan-out looks up a tenant's live endpoints of one environment.
CREATE INDEX webhooks_fanout ON webhooks (tenant_id, environment) WHERE deleted_at IS NULL AND status = 'enabled';
CREATE INDEX webhooks_tenant ON webhooks (tenant_id, environment, id) WHERE deleted_at IS NULL;

CREATE TABLE events (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id            text NOT NULL,
    environment   text NOT NULL CHECK (environment IN ('live', 'test')),
    event_type    text NOT NULL,
    call_id       text NOT NULL,
    -- The envelope's `created`: unix seconds.
    created       bigint NOT NULL,
    data          jsonb NOT NULL,
    -- SHA-256 of the request as the emitter sent it, to tell an idempotent repeat from a conflicting reuse of the id.
    request_hash  bytea NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX events_received ON events (tenant_id, environment, received_at DESC, id DESC);
CREATE INDEX events_received_at ON events (received_at);

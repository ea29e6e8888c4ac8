-- The durable delivery queue: one row per delivery of one event to one webhook, and one row per attempt.

-- A ULID-style id (`<prefix>` + 26 Crockford base32 characters: 48 bits of milliseconds, 80 random bits),
-- the same shape courier-core generates, so fan-out can create any number of deliveries in one statement.
CREATE FUNCTION courier_id(prefix text) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    alphabet constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    ms bigint := floor(extract(epoch FROM clock_timestamp()) * 1000);
    r bytea := uuid_send(gen_random_uuid());
    -- 40 random bits from bytes 0-4 and 40 from bytes 10-14, skipping the uuid's version and variant bits.
    hi bigint := (get_byte(r, 0)::bigint << 32) | (get_byte(r, 1)::bigint << 24) | (get_byte(r, 2)::bigint << 16)
                 | (get_byte(r, 3)::bigint << 8) | get_byte(r, 4);
    lo bigint := (get_byte(r, 10)::bigint << 32) | (get_byte(r, 11)::bigint << 24) | (get_byte(r, 12)::bigint << 16)
                 | (get_byte(r, 13)::bigint << 8) | get_byte(r, 14);
    out text := prefix;
BEGIN
    FOR i IN REVERSE 9..0 LOOP
        out := out || substr(alphabet, ((ms >> (5 * i)) & 31)::int + 1, 1);
    END LOOP;
    FOR i IN REVERSE 7..0 LOOP
        out := out || substr(alphabet, ((hi >> (5 * i)) & 31)::int + 1, 1);
    END LOOP;
    FOR i IN REVERSE 7..0 LOOP
        out := out || substr(alphabet, ((lo >> (5 * i)) & 31)::int + 1, 1);
    END LOOP;
    RETURN out;
END
$$;

CREATE TABLE deliveries (
    id                text PRIMARY KEY,
    tenant_id         uuid NOT NULL,
    environment       text NOT NULL CHECK (environment IN ('live', 'test')),
    event_id          text NOT NULL,
    webhook_id        text NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    -- Copied from the event so the log filters need no join.
    event_type        text NOT NULL,
    call_id           text NOT NULL,
    status            text NOT NULL CHECK (status IN ('pending', 'delivering', 'succeeded', 'failed', 'cancelled')),
    attempt_count     integer NOT NULL DEFAULT 0 CHECK (attempt_count >= 0),
    max_attempts      integer NOT NULL CHECK (max_attempts BETWEEN 1 AND 25),
    -- When a pending delivery's next attempt is due.
    next_attempt_at   timestamptz,
    -- When a claimed delivery's lease runs out and any worker may claim it again.
    lease_expires_at  timestamptz,
    last_status_code  integer,
    last_error        text,
    replay_of         text REFERENCES deliveries (id) ON DELETE SET NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- The one column the claim reads: when this row may next be claimed; NULL once it is finished.
    due_at            timestamptz GENERATED ALWAYS AS (
                          CASE status WHEN 'pending' THEN next_attempt_at WHEN 'delivering' THEN lease_expires_at END
                      ) STORED,
    FOREIGN KEY (tenant_id, event_id) REFERENCES events (tenant_id, id) ON DELETE CASCADE,
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL)),
    CHECK ((status = 'delivering') = (lease_expires_at IS NOT NULL)),
    CHECK (attempt_count <= max_attempts)
);

-- The claim: only live work is indexed, so finished rows never slow it down.
CREATE INDEX deliveries_due ON deliveries (due_at) WHERE due_at IS NOT NULL;
-- The delivery log, newest first (ids sort by creation).
CREATE INDEX deliveries_tenant ON deliveries (tenant_id, environment, id DESC);
CREATE INDEX deliveries_tenant_status ON deliveries (tenant_id, environment, status, id DESC);
CREATE INDEX deliveries_webhook ON deliveries (webhook_id, id DESC);
CREATE INDEX deliveries_event ON deliveries (tenant_id, event_id);
CREATE INDEX deliveries_call ON deliveries (tenant_id, call_id, id DESC);
CREATE INDEX deliveries_replay_of ON deliveries (replay_of) WHERE replay_of IS NOT NULL;
CREATE INDEX deliveries_created ON deliveries (created_at);

CREATE TABLE delivery_attempts (
    delivery_id          text NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt              integer NOT NULL CHECK (attempt >= 1),
    started_at           timestamptz NOT NULL,
    duration_ms          integer NOT NULL CHECK (duration_ms >= 0),
    -- Exactly one of a response status or an error kind.
    status_code          integer,
    error_kind           text,
    error_message        text,
    -- At most 4 KiB of the receiver's answer.
    response_body        text CHECK (octet_length(response_body) <= 4096),
    signature_timestamp  bigint NOT NULL,
    PRIMARY KEY (delivery_id, attempt),
    CHECK ((status_code IS NULL) <> (error_kind IS NULL))
);

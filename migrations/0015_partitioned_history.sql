-- History by day: `events`, `deliveries` and `delivery_attempts` become range-partitioned by day (UTC), so
-- retention drops a whole day instead of deleting its rows one by one (no dead tuples, no vacuum debt, no index
-- bloat), and a day's drop costs the same at 10 million rows as at 10 thousand.
--
-- * Daily, not weekly: retention is counted in days and a week's partition would hold up to six days past it; at
--   30 days of retention a table has about 40 partitions (30 kept, 7 created ahead, the legacy one and the
--   default), which keeps planning cheap. Queries that know the time (every one by delivery id) touch one.
-- * `deliveries` by `id`: a delivery id starts with the millisecond it was created (see `courier_id`), so `id` is
--   its own time key and the primary key, and every lookup by id, stays as it is. `delivery_attempts` by
--   `delivery_id` on the same bounds, so an attempt sits in its delivery's day.
-- * `events` by `received_at`: event ids are the emitter's and say nothing about time. A partitioned table's
--   unique keys must include the partition key, so the idempotency key `(tenant, environment, id)` moves to the
--   narrow, unpartitioned `event_keys`, which also records the day the event is in.
-- * The foreign keys among the three tables go: a dropped partition cannot cascade, and a drop must not scan the
--   other tables for references. What they guarded is now code: deletes name all four tables
--   (`courier_store::history`), a replay locks its event's key, and retention drops a day only when no live
--   delivery needs anything in it (`courier_scheduler::retention`).
-- * The existing tables are attached whole as each table's first partition (`*_legacy`, everything before this
--   migration), so upgrading moves no delivery rows; only the narrow keys are copied.
-- * A `DEFAULT` partition catches rows past the partitions created so far (a clock that ran ahead), so ingest
--   never fails for want of a partition.

-- The smallest id with this prefix at this time: a day's partition bound.
CREATE FUNCTION courier_id_floor(prefix text, at timestamptz) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    alphabet constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    ms bigint := floor(extract(epoch FROM at) * 1000);
    out text := prefix;
BEGIN
    FOR i IN REVERSE 9..0 LOOP
        out := out || substr(alphabet, ((ms >> (5 * i)) & 31)::int + 1, 1);
    END LOOP;
    RETURN out || '0000000000000000';
END
$$;

ALTER TABLE delivery_attempts DROP CONSTRAINT delivery_attempts_delivery_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_replay_of_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_event_fkey;

-- Idempotency across all days, and where each event lives.
CREATE TABLE event_keys (
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    environment  text NOT NULL,
    id           text NOT NULL,
    received_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, environment, id)
);
CREATE INDEX event_keys_received_at ON event_keys (received_at);
INSERT INTO event_keys (tenant_id, environment, id, received_at)
SELECT tenant_id, environment, id, received_at FROM events;

-- events
ALTER TABLE events RENAME TO events_legacy;
ALTER TABLE events_legacy DROP CONSTRAINT events_tenant_id_fkey;
-- Its key becomes (tenant, environment, id, received_at) like every day's; uniqueness is event_keys' job now.
ALTER TABLE events_legacy DROP CONSTRAINT events_pkey;
ALTER INDEX events_received RENAME TO events_legacy_received;
DROP INDEX events_received_at;
CREATE TABLE events (LIKE events_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (received_at);
ALTER TABLE events ADD PRIMARY KEY (tenant_id, environment, id, received_at);
CREATE INDEX events_received ON events (tenant_id, environment, received_at DESC, id DESC);
ALTER TABLE events ATTACH PARTITION events_legacy FOR VALUES FROM (MINVALUE) TO (now());

-- deliveries
ALTER TABLE deliveries RENAME TO deliveries_legacy;
ALTER INDEX deliveries_pkey RENAME TO deliveries_legacy_pkey;
ALTER INDEX deliveries_due RENAME TO deliveries_legacy_due;
ALTER INDEX deliveries_tenant RENAME TO deliveries_legacy_tenant;
ALTER INDEX deliveries_webhook RENAME TO deliveries_legacy_webhook;
ALTER INDEX deliveries_event RENAME TO deliveries_legacy_event;
ALTER INDEX deliveries_call RENAME TO deliveries_legacy_call;
ALTER INDEX deliveries_replay_of RENAME TO deliveries_legacy_replay_of;
ALTER INDEX deliveries_chain RENAME TO deliveries_legacy_chain;
-- Only the old row-by-row retention read it.
DROP INDEX deliveries_created;
CREATE TABLE deliveries (LIKE deliveries_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)
    PARTITION BY RANGE (id);
ALTER TABLE deliveries ADD PRIMARY KEY (id);
CREATE INDEX deliveries_due ON deliveries (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX deliveries_tenant ON deliveries (tenant_id, environment, id DESC);
CREATE INDEX deliveries_webhook ON deliveries (webhook_id, id DESC);
CREATE INDEX deliveries_event ON deliveries (tenant_id, environment, event_id);
CREATE INDEX deliveries_call ON deliveries (tenant_id, call_id, id DESC);
CREATE INDEX deliveries_replay_of ON deliveries (replay_of) WHERE replay_of IS NOT NULL;
CREATE INDEX deliveries_chain ON deliveries (webhook_id, call_id, call_seq) WHERE call_seq IS NOT NULL;
-- Retention asks "is anything here still live?" per day; `deliveries_due` answers for pending and delivering.
CREATE INDEX deliveries_waiting ON deliveries (id) WHERE status = 'waiting';
ALTER TABLE deliveries ATTACH PARTITION deliveries_legacy
    FOR VALUES FROM (MINVALUE) TO (courier_id_floor('dlv_', now()));

-- delivery_attempts
ALTER TABLE delivery_attempts RENAME TO delivery_attempts_legacy;
ALTER INDEX delivery_attempts_pkey RENAME TO delivery_attempts_legacy_pkey;
CREATE TABLE delivery_attempts (LIKE delivery_attempts_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (delivery_id);
ALTER TABLE delivery_attempts ADD PRIMARY KEY (delivery_id, attempt);
ALTER TABLE delivery_attempts ATTACH PARTITION delivery_attempts_legacy
    FOR VALUES FROM (MINVALUE) TO (courier_id_floor('dlv_', now()));

-- Creates the day partitions of all three tables from `since` up to and including the day of `upto` (UTC) that
-- do not exist yet; returns how many days it created. Courier calls it at start and from its retention loop, a
-- week ahead. A day whose rows already sit in the DEFAULT partition (the clock ran ahead of this function) is
-- skipped with a warning: those rows stay in DEFAULT, which is never dropped.
CREATE FUNCTION courier_create_partitions(since timestamptz, upto timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    day timestamptz := date_trunc('day', since AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    lo timestamptz;
    hi timestamptz;
    suffix text;
    created integer := 0;
BEGIN
    -- Every Courier process calls this; one at a time.
    PERFORM pg_advisory_xact_lock(hashtext('courier_create_partitions'));
    WHILE day <= upto LOOP
        suffix := to_char(day AT TIME ZONE 'UTC', 'YYYYMMDD');
        hi := day + interval '1 day';
        IF to_regclass('events_' || suffix) IS NULL THEN
            -- A day that began before the legacy partition ended starts where it ends.
            lo := greatest(day, (SELECT max(upper) FROM courier_partitions WHERE table_name = 'events' AND upper <= hi));
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                               'events_' || suffix, lo, hi);
                EXECUTE format('CREATE TABLE %I PARTITION OF deliveries FOR VALUES FROM (%L) TO (%L)',
                               'deliveries_' || suffix, courier_id_floor('dlv_', lo), courier_id_floor('dlv_', hi));
                EXECUTE format('CREATE TABLE %I PARTITION OF delivery_attempts FOR VALUES FROM (%L) TO (%L)',
                               'delivery_attempts_' || suffix, courier_id_floor('dlv_', lo), courier_id_floor('dlv_', hi));
                created := created + 1;
            EXCEPTION WHEN check_violation THEN
                RAISE WARNING 'partitions for % not created: rows of that day are in a DEFAULT partition', suffix;
            END;
        END IF;
        day := hi;
    END LOOP;
    RETURN created;
END
$$;

-- The partitions of the three tables, each with its day (`suffix`: `YYYYMMDD`, `legacy` or `default`) and, for
-- `events`, its bounds: the three tables' partitions of one day share the suffix and are dropped together.
CREATE VIEW courier_partitions AS
SELECT p.relname::text AS partition, parent.relname::text AS table_name,
       substr(p.relname, length(parent.relname) + 2) AS suffix,
       CASE WHEN parent.relname = 'events'
            THEN ((regexp_match(pg_get_expr(p.relpartbound, p.oid), 'FROM \(''([^'']*)''\)'))[1])::timestamptz
       END AS lower,
       CASE WHEN parent.relname = 'events'
            THEN ((regexp_match(pg_get_expr(p.relpartbound, p.oid), 'TO \(''([^'']*)''\)'))[1])::timestamptz
       END AS upper
  FROM pg_inherits i
  JOIN pg_class p ON p.oid = i.inhrelid
  JOIN pg_class parent ON parent.oid = i.inhparent
 WHERE parent.relname IN ('events', 'deliveries', 'delivery_attempts')
   AND parent.relnamespace = to_regnamespace(current_schema());

CREATE TABLE events_default PARTITION OF events DEFAULT;
CREATE TABLE deliveries_default PARTITION OF deliveries DEFAULT;
CREATE TABLE delivery_attempts_default PARTITION OF delivery_attempts DEFAULT;

-- Today and tomorrow; Courier keeps a week ahead from its start on.
SELECT courier_create_partitions(now(), now() + interval '1 day');

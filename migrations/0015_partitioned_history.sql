-- History by day: `events`, `deliveries` and `delivery_attempts` become range-partitioned by day (UTC), so
-- retention drops a whole day instead of deleting its rows one by one (no dead tuples, no vacuum debt, no index
-- bloat), and a day's drop costs the same at 10 million rows as at 10 thousand.
--
-- * Daily, not weekly: retention is counted in days and a week's partition would hold up to six days past it; at
--   30 days of retention a table has about 40 partitions (30 kept, 7 created ahead, the legacy one and the
--   default), which keeps planning cheap. Queries that know the time (every one by delivery id) touch one.
-- * Finished `deliveries` by `id`: a delivery id starts with the millisecond it was created (see `courier_id`), so
--   `id` is its own time key, and every lookup by id prunes to one day. Live deliveries are a partition of their
--   own, the queue (below). `delivery_attempts` by `delivery_id` on the same bounds, so an attempt sits in its
--   delivery's day.
-- * `events` by `received_at`: event ids are the emitter's and say nothing about time. A partitioned table's
--   unique keys must include the partition key, so the idempotency key `(tenant, environment, id)` moves to the
--   narrow, unpartitioned `event_keys`, which also records the day the event is in.
-- * The foreign keys among the three tables go: a dropped partition cannot cascade, and a drop must not scan the
--   other tables for references. What they guarded is now code: deletes name all four tables
--   (`courier_scheduler::retention`), a replay reads its event and locks its key, and retention drops a day only
--   when no live delivery needs its events (`courier_scheduler::history`).
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
-- Dropping a day forgets its keys by time; a tenant with a shorter retention loses its own by time.
CREATE INDEX event_keys_received_at ON event_keys (received_at);
CREATE INDEX event_keys_tenant_received_at ON event_keys (tenant_id, received_at);
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

-- deliveries: the live queue and the log are two partitions by status, and the log is partitioned by day.
--
--   deliveries              LIST (status)
--   ├── deliveries_live     waiting, pending, delivering: the queue, one small table
--   └── deliveries_done     succeeded, failed, cancelled, RANGE (id)
--       ├── deliveries_legacy, deliveries_YYYYMMDD, …, deliveries_default
--
-- The claim, the recorder, the lease sweeps and ordering name a live status, so they plan and run against one
-- small table however many days the log holds (a statement over forty day partitions spends tens of
-- milliseconds planning). A delivery that finishes moves into its day of the log in the same update (PostgreSQL
-- moves a row whose partition key changes), and a day of the log never holds live work, so dropping it never
-- loses any. The claim's indexes (`deliveries_due`, `deliveries_chain`) exist on the queue only.
ALTER TABLE deliveries RENAME TO deliveries_legacy;
ALTER TABLE deliveries_legacy DROP CONSTRAINT deliveries_pkey;
ALTER INDEX deliveries_tenant RENAME TO deliveries_legacy_tenant;
ALTER INDEX deliveries_webhook RENAME TO deliveries_legacy_webhook;
ALTER INDEX deliveries_event RENAME TO deliveries_legacy_event;
ALTER INDEX deliveries_call RENAME TO deliveries_legacy_call;
ALTER INDEX deliveries_replay_of RENAME TO deliveries_legacy_replay_of;
-- Only the old row-by-row retention read it; the queue's indexes move to the queue.
DROP INDEX deliveries_created;
DROP INDEX deliveries_due;
DROP INDEX deliveries_chain;
CREATE TABLE deliveries (LIKE deliveries_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)
    PARTITION BY LIST (status);
-- A partitioned table's key must hold its partition keys; ids are unique by construction (80 random bits).
ALTER TABLE deliveries ADD PRIMARY KEY (id, status);
CREATE INDEX deliveries_tenant ON deliveries (tenant_id, environment, id DESC);
CREATE INDEX deliveries_webhook ON deliveries (webhook_id, id DESC);
CREATE INDEX deliveries_event ON deliveries (tenant_id, environment, event_id);
CREATE INDEX deliveries_call ON deliveries (tenant_id, call_id, id DESC);
CREATE INDEX deliveries_replay_of ON deliveries (replay_of) WHERE replay_of IS NOT NULL;

CREATE TABLE deliveries_live PARTITION OF deliveries FOR VALUES IN ('waiting', 'pending', 'delivering');
CREATE INDEX deliveries_due ON deliveries_live (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX deliveries_chain ON deliveries_live (webhook_id, call_id, call_seq) WHERE call_seq IS NOT NULL;
CREATE TABLE deliveries_done PARTITION OF deliveries FOR VALUES IN ('succeeded', 'failed', 'cancelled')
    PARTITION BY RANGE (id);

-- The old table's live rows (the queue: few) join the queue; the rest is attached whole as the log's first day.
INSERT INTO deliveries_live (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status, attempt_count, max_attempts,
    next_attempt_at, lease_expires_at, last_status_code, last_error, replay_of, created_at, updated_at, trace_parent,
    call_seq)
SELECT id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status, attempt_count, max_attempts,
    next_attempt_at, lease_expires_at, last_status_code, last_error, replay_of, created_at, updated_at, trace_parent,
    call_seq
  FROM deliveries_legacy WHERE status IN ('waiting', 'pending', 'delivering');
DELETE FROM deliveries_legacy WHERE status IN ('waiting', 'pending', 'delivering');
ALTER TABLE deliveries_done ATTACH PARTITION deliveries_legacy
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
                EXECUTE format('CREATE TABLE %I PARTITION OF deliveries_done FOR VALUES FROM (%L) TO (%L)',
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
SELECT p.relname::text AS partition, regexp_replace(p.relname, '_[^_]*$', '') AS table_name,
       substring(p.relname FROM '_([^_]*)$') AS suffix,
       CASE WHEN parent.relname = 'events'
            THEN ((regexp_match(pg_get_expr(p.relpartbound, p.oid), 'FROM \(''([^'']*)''\)'))[1])::timestamptz
       END AS lower,
       CASE WHEN parent.relname = 'events'
            THEN ((regexp_match(pg_get_expr(p.relpartbound, p.oid), 'TO \(''([^'']*)''\)'))[1])::timestamptz
       END AS upper
  FROM pg_inherits i
  JOIN pg_class p ON p.oid = i.inhrelid
  JOIN pg_class parent ON parent.oid = i.inhparent
 WHERE parent.relname IN ('events', 'deliveries_done', 'delivery_attempts')
   AND parent.relnamespace = to_regnamespace(current_schema());

CREATE TABLE events_default PARTITION OF events DEFAULT;
CREATE TABLE deliveries_default PARTITION OF deliveries_done DEFAULT;
CREATE TABLE delivery_attempts_default PARTITION OF delivery_attempts DEFAULT;

-- Today and tomorrow; Courier keeps a week ahead from its start on.
SELECT courier_create_partitions(now(), now() + interval '1 day');

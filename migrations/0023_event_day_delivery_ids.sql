-- Self-contained days: a delivery is keyed by its event's day. Its id's time (the first ten characters after the
-- prefix, see `courier_id`) is its event's `received_at` instead of the moment the delivery was made, so every
-- delivery of an event, replays and fan-outs just past midnight included, and their attempts (partitioned by
-- `delivery_id`) sit in the event's day, and a day's drop takes an event with everything of it.
--
-- * Events are received to the millisecond (the code truncates `received_at`), so a delivery id names its event's
--   `received_at` exactly (`courier_id_time` reads it back). The claim still finds the event's day through
--   `event_keys`: a claim reading it from the id measured slower in the batch benchmark.
-- * Nothing is rewritten: ids are public (webhook headers, logs), and the old ones stay valid.
-- * The log lists deliveries by id, newest first: by their event's time now, so a replay sits beside its
--   original rather than at the top. `created_at` keeps when a delivery was made.

-- The id of a row made at `at`: what `courier_id` makes now.
CREATE FUNCTION courier_id_at(prefix text, at timestamptz) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    alphabet constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    ms bigint := floor(extract(epoch FROM at) * 1000);
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

CREATE OR REPLACE FUNCTION courier_id(prefix text) RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT courier_id_at(prefix, clock_timestamp())
$$;

-- The millisecond an id names (the inverse of `courier_id_floor`), exact: integer milliseconds added to the epoch
-- (exact while the microseconds fit a double's 53 bits, until the year 2255).
-- One SQL expression, which the planner inlines (a PL/pgSQL loop would be a function call and ten interpreted
-- steps a row).
CREATE FUNCTION courier_id_time(id text) RETURNS timestamptz LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT timestamptz 'epoch' + interval '1 millisecond' * (
        ((strpos('0123456789ABCDEFGHJKMNPQRSTVWXYZ', substr(id, strpos(id, '_') + 1, 1)) - 1)::bigint << 45)
        | ((strpos('0123456789ABCDEFGHJKMNPQRSTVWXYZ', substr(id, strpos(id, '_') + 2, 1)) - 1)::bigint << 40)
        | ((strpos('0123456789ABCDEFGHJKMNPQRSTVWXYZ', substr(id, strpos(id, '_') + 3, 1)) - 1)::bigint << 35)
        | ((strpos('0123456789ABCDEFGHJKMNPQRSTVWXYZ', substr(id, strpos(id, '_') + 4, 1)) - 1)::bigint << 30)
        | ((strpos('0123456789ABCDEFGHJKMNPQRSTVWXYZ', substr(id, strpos(id, '_') + 5, 1)) - 1)::bigint << 25)
        | ((strpos('0123456789ABCDEFGHJKMNPQRSTVWXYZ', substr(id, strpos(id, '_') + 6, 1)) - 1)::bigint << 20)
        | ((strpos('0123456789ABCDEFGHJKMNPQRSTVWXYZ', substr(id, strpos(id, '_') + 7, 1)) - 1)::bigint << 15)
        | ((strpos('0123456789ABCDEFGHJKMNPQRSTVWXYZ', substr(id, strpos(id, '_') + 8, 1)) - 1)::bigint << 10)
        | ((strpos('0123456789ABCDEFGHJKMNPQRSTVWXYZ', substr(id, strpos(id, '_') + 9, 1)) - 1)::bigint << 5)
        | ((strpos('0123456789ABCDEFGHJKMNPQRSTVWXYZ', substr(id, strpos(id, '_') + 10, 1)) - 1)::bigint << 0))
$$;

//! The statements that record a batch of attempts (`super::finish` runs them): the attempts, the deliveries
//! handed over written for the first time, and the fenced update of the stored ones, in one statement.

/// The fenced update that moves stored deliveries on, for `concat!`: `$1`–`$6` the records' arrays (id, attempt,
/// status, delay, code, kind), `$7` the clock's skew, `$8` the status a record expects.
macro_rules! fenced_update {
    () => {
        "UPDATE deliveries d
            SET status = u.status, next_attempt_at = now() + $7 + u.delay_ms * interval '1 millisecond',
                lease_expires_at = NULL, last_status_code = u.code, last_error = u.kind, updated_at = now()
           FROM unnest($1::text[], $2::int[], $3::text[], $4::bigint[], $5::int[], $6::text[])
                AS u(id, attempt, status, delay_ms, code, kind)
          WHERE d.id = u.id AND d.status = $8 AND d.attempt_count = u.attempt
         RETURNING d.webhook_id, d.status, d.id"
    };
}

/// What the deliveries in a CTE `finished` (webhook_id, status) decide for their webhooks, as two more CTEs: the
/// hourly counts (`$succeeded` and `$failed` bind those statuses) and the end of a succeeding webhook's failure
/// streak. In the statement that moves the deliveries, so the common batch needs no other.
macro_rules! webhooks_moved_on {
    ($succeeded:literal, $failed:literal) => {
        concat!(
            "counted AS (",
            crate::hourly::count_finished!("finished", $succeeded, $failed),
            "), recovered AS (",
            courier_store::reset_failure_streak!("(SELECT webhook_id FROM finished WHERE status = ", $succeeded, ") s"),
            ")"
        )
    };
}

/// A batch's one statement, whose `written` CTE keeps the handed-over deliveries `$which` names (see [`RECORD`]).
macro_rules! record {
    ($which:literal) => {
        concat!(
            "WITH forgotten AS (DELETE FROM delivery_handovers WHERE id = ANY ($10)),
                  attempted AS (
                    INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code,
                                                   error_kind, error_message, response_body, response_truncated,
                                                   signature_timestamp)
                    SELECT * FROM unnest($1::text[], $2::int[], $11::timestamptz[], $12::int[], $5::int[],
                                         $6::text[], $13::text[], $14::bytea[], $15::bool[], $16::bigint[])
                     WHERE $17
                    ON CONFLICT DO NOTHING
                    RETURNING delivery_id),
                  written AS (
                    INSERT INTO deliveries (",
            super::journal::journal_columns!(),
            ", next_attempt_at, last_status_code, last_error)
                    SELECT ",
            super::journal::journal_values!(),
            ", u.status, u.attempt, NULL, now() + $7 + u.delay_ms * interval '1 millisecond', u.code, u.kind
                      FROM (SELECT * FROM delivery_handovers WHERE id = ANY ($9) FOR KEY SHARE) h, ",
            super::journal::journal_deliveries!(),
            "     JOIN unnest($1::text[], $2::int[], $3::text[], $4::bigint[], $5::int[], $6::text[])
                           AS u(id, attempt, status, delay_ms, code, kind) ON u.id = x.id
                     WHERE ",
            $which,
            "
                    ON CONFLICT DO NOTHING
                    RETURNING webhook_id, status, id),
                  moved AS (",
            fenced_update!(),
            "),
                  finished AS (SELECT webhook_id, status, id, true AS written FROM written
                               UNION ALL
                               SELECT webhook_id, status, id, false FROM moved), ",
            webhooks_moved_on!("$18", "$19"),
            " SELECT webhook_id, status, id, written FROM finished"
        )
    };
}

/// A batch's one statement. Retry times come from the database's clock, like the claim's `now()`: workers' clocks
/// may disagree. The attempts go first. A delivery handed over by ingest is written here for the first time, from
/// its journal row (`super::journal`), which the statement holds `FOR KEY SHARE` so the sweep cannot write it too,
/// and only when this statement stored its attempt: a record run again after its first run committed (a commit
/// whose answer was lost, a split batch retried) finds its attempt stored and writes nothing twice, whatever became
/// of the delivery since. Stored deliveries move through the fenced update. Journal rows whose deliveries are all
/// written (`$10`) go too, and the webhooks of the written and moved rows are counted and their streaks ended
/// ([`webhooks_moved_on`], `$18` succeeded, `$19` failed). `$17` is true.
pub(crate) const RECORD: &str = record!("x.id IN (SELECT delivery_id FROM attempted)");

/// [`RECORD`] for the last resort, a batch without attempt rows (`$17` false): a handed-over delivery is written
/// when no row of it exists yet. Its own statement, because that lookup by id cannot be pruned before it runs: in
/// [`RECORD`]'s plan it would open every day of `deliveries` for each lone attempt (75 µs at 40 days, measured with
/// `pgbench` on a generic plan), for a case that needs it once in a great while.
pub(crate) const RECORD_WITHOUT_ATTEMPTS: &str = record!("NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = x.id)");

/// The fenced update alone, in a statement (and a snapshot) of its own, with what it decides for the webhooks.
pub(crate) const MOVE_AGAIN: &str = concat!(
    "WITH moved AS (",
    fenced_update!(),
    "),
          finished AS (SELECT webhook_id, status, id, false AS written FROM moved), ",
    webhooks_moved_on!("$9", "$10"),
    " SELECT webhook_id, status, id, written FROM finished"
);

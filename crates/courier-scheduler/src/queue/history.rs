//! History by day: `events`, `deliveries` and `delivery_attempts` are partitioned by day (migration 0015).
//! Courier creates each day's partitions a week ahead, and drops a day whole, its three partitions and its events'
//! keys, once the day is past the longest retention any tenant has, whatever is still live: no tenant's delivery
//! keeps another tenant's expired history. The few rows live deliveries still need (their events, and the attempts
//! of live deliveries of that day) move to the DEFAULT partitions in the drop's transaction, where retention by row
//! ([`crate::retention`]) deletes them once nothing live needs them; a delivery's lifetime is capped at its tenant's
//! retention ([`super::erase::expire_batch`]), so that is not long. Unfinished work is never lost to a drop.

use chrono::{DateTime, Duration, Utc};
use courier_core::EventId;
use courier_store::Owner;
use courier_store::events::{self, PartitionSuffix};
use sqlx::{PgConnection, PgPool};

use crate::Result;

/// How far ahead each day's partitions exist. Rows past it land in the DEFAULT partitions, which work but are
/// never dropped.
pub const AHEAD: Duration = Duration::days(7);

/// How long a drop waits for the locks it needs. Dropping a partition locks its parent table for a moment, and
/// a drop queued behind a long query would hold up every query behind it; past this, it gives up until the next
/// pass.
const LOCK_TIMEOUT: &str = "300ms";

/// Creates the day partitions missing from `now`'s day through [`AHEAD`]; returns how many days it created.
pub async fn create_ahead(pool: &PgPool, now: DateTime<Utc>) -> Result<i32> {
    let created: i32 = sqlx::query_scalar("SELECT courier_create_partitions($1, $2)")
        .bind(now)
        .bind(now + AHEAD)
        .fetch_one(pool)
        .await?;
    Ok(created)
}

/// One day of history: its partitions' suffix and the `received_at` bounds of its events.
#[derive(Debug, Clone, PartialEq)]
pub struct Day {
    pub suffix: PartitionSuffix,
    /// `None` for the legacy partition, which holds everything before the upgrade.
    pub lower: Option<DateTime<Utc>>,
    pub upper: DateTime<Utc>,
}

/// The days whose events all were received before `cutoff`, oldest first.
pub async fn days_before(pool: &PgPool, cutoff: DateTime<Utc>) -> Result<Vec<Day>> {
    let rows: Vec<(String, Option<DateTime<Utc>>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT suffix, lower, upper FROM courier_partitions
          WHERE table_name = 'events' AND upper <= $1 ORDER BY upper",
    )
    .bind(cutoff)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(suffix, lower, upper)| Some(Day { suffix: PartitionSuffix::parse(&suffix)?, lower, upper }))
        .collect())
}

/// The oldest a day may be and still be kept: `now` less the longest retention, the default or any tenant's.
pub async fn cutoff(pool: &PgPool, default_days: u32, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let days: i32 = sqlx::query_scalar("SELECT greatest($1, max(retention_days)) FROM tenants")
        .bind(default_days as i32)
        .fetch_one(pool)
        .await?;
    Ok(now - Duration::days(i64::from(days)))
}

/// What [`drop_day`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The day is gone, and its events' keys after it, but for what live deliveries still needed ([`Held`]).
    Dropped(Held),
    /// Another transaction held a lock the drop needs for longer than it waits: try again later.
    Busy,
}

/// What a drop moved to the DEFAULT partitions instead of dropping, because a live delivery still needs it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Events some live delivery (of any day) is for; their keys stay until retention by row deletes them.
    pub events: u64,
    /// Attempts of the day's deliveries that are still live, so their log stays whole.
    pub attempts: u64,
}

/// Drops one day whole (see the module's doc), then forgets the keys of its events that went.
pub async fn drop_day(pool: &PgPool, day: &Day) -> Result<Dropped> {
    let dropped = drop_partitions(pool, day).await?;
    if matches!(dropped, Dropped::Dropped(_)) {
        forget_keys(pool, day.lower, day.upper).await?;
    }
    Ok(dropped)
}

/// The drop itself, without forgetting the keys: one short transaction, which never waits longer than
/// [`LOCK_TIMEOUT`] for a lock.
pub async fn drop_partitions(pool: &PgPool, day: &Day) -> Result<Dropped> {
    let mut tx = pool.begin().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))).execute(&mut *tx).await?;
    // Every Courier process runs retention; one drops at a time, the others find the day gone on their next pass.
    let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('courier_drop_day'))")
        .fetch_one(&mut *tx)
        .await?;
    if !mine {
        return Ok(Dropped::Busy);
    }
    let outcome = async {
        // A replay reads its event (see `replay::EVENT_HELD`), so locking the day's events waits for any replay of
        // one of them and makes later ones wait for the drop. Whatever such a replay queued is committed and
        // visible now, so the events live deliveries need are known before anything is dropped.
        let events = day.suffix.table("events");
        sqlx::query(sqlx::AssertSqlSafe(format!("LOCK TABLE {events} IN ACCESS EXCLUSIVE MODE")))
            .execute(&mut *tx)
            .await?;
        let needed = needed_by_live(&mut tx, &day.suffix).await?;
        let attempts = hold_live_attempts(&mut tx, day).await?;
        // The day's deliveries are all finished: live ones are in `deliveries_live` (migration 0015).
        let deliveries = day.suffix.table("deliveries");
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {deliveries}"))).execute(&mut *tx).await?;
        let events = events::drop_partition(&mut tx, &day.suffix, &needed).await?;
        Ok::<_, crate::Error>(Held { events, attempts })
    }
    .await;
    match outcome {
        Ok(held) => {
            tx.commit().await?;
            Ok(Dropped::Dropped(held))
        }
        Err(err) if is_lock_timeout(&err) => Ok(Dropped::Busy),
        Err(err) => Err(err),
    }
}

/// Drops the day's attempts but those of deliveries still live, which move to the DEFAULT partition (the day's
/// range maps there once its partition is detached); returns how many moved. A live delivery's log should not lose
/// its first attempts.
async fn hold_live_attempts(conn: &mut PgConnection, day: &Day) -> Result<u64> {
    let attempts = day.suffix.table("delivery_attempts");
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER TABLE delivery_attempts DETACH PARTITION {attempts}")))
        .execute(&mut *conn)
        .await?;
    // Driven by the queue's deliveries of this day (ids carry their day), usually none, each looked up by the
    // attempts' key: never a scan of the day's attempts while the drop holds its locks.
    let held = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO delivery_attempts
         SELECT a.* FROM deliveries_live d JOIN {attempts} a ON a.delivery_id = d.id
          WHERE d.id < courier_id_floor('dlv_', $2) AND ($1::timestamptz IS NULL OR d.id >= courier_id_floor('dlv_', $1))"
    )))
    .bind(day.lower)
    .bind(day.upper)
    .execute(&mut *conn)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {attempts}"))).execute(&mut *conn).await?;
    Ok(held.rows_affected())
}

/// Keys deleted per transaction when a dropped day's keys are forgotten.
const KEYS_PER_BATCH: i64 = 50_000;

/// Forgets the keys of events received in `[lower, upper)`, whose day is gone, in batches; returns how many.
/// Until then an id of that day is still taken (a repeat of it answers 409).
pub async fn forget_keys(pool: &PgPool, lower: Option<DateTime<Utc>>, upper: DateTime<Utc>) -> Result<u64> {
    let mut total = 0;
    loop {
        let done = events::forget_keys(pool, lower, upper, KEYS_PER_BATCH).await?;
        total += done;
        if done < KEYS_PER_BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Forgets the keys older than every day partition left (none while the legacy partition exists): what a drop
/// did not get to forget before its process stopped.
pub async fn forget_stale_keys(pool: &PgPool) -> Result<u64> {
    let oldest: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT CASE WHEN bool_or(lower IS NULL) THEN NULL ELSE min(lower) END
           FROM courier_partitions WHERE table_name = 'events' AND suffix <> 'default'",
    )
    .fetch_one(pool)
    .await?;
    match oldest {
        Some(oldest) => forget_keys(pool, None, oldest).await,
        None => Ok(0),
    }
}

/// Drops every day past the cutoff, oldest first, and forgets any keys left of days dropped before; returns the
/// days dropped (with what each held back) and the days kept. A day that is busy is kept with every later one:
/// dropping in order means a live delivery's event leaves no later than the delivery's own day, so whatever the
/// DEFAULT partitions hold of a dropped day belongs to an event held there, which retention by row deletes whole.
pub async fn drop_expired(
    pool: &PgPool,
    default_days: u32,
    now: DateTime<Utc>,
) -> Result<(Vec<(Day, Held)>, Vec<Day>)> {
    let cutoff = cutoff(pool, default_days, now).await?;
    let (mut dropped, mut kept) = (Vec::new(), Vec::new());
    for day in days_before(pool, cutoff).await? {
        if !kept.is_empty() {
            kept.push(day);
            continue;
        }
        match drop_day(pool, &day).await? {
            Dropped::Dropped(held) => dropped.push((day, held)),
            Dropped::Busy => kept.push(day),
        }
    }
    forget_stale_keys(pool).await?;
    Ok((dropped, kept))
}

/// The events of the day a live delivery is for: the day's own live deliveries (a delivery sits in its event's
/// day since migration 0023: one the lifetime cap has not ended yet, which leaves a delivery in flight to its
/// worker), or one of a later day made before that migration (a replay then sat in the day it was made).
async fn needed_by_live(conn: &mut PgConnection, suffix: &PartitionSuffix) -> Result<Vec<(Owner, EventId)>> {
    let events = suffix.table("events");
    let rows: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT e.tenant_id, e.environment, e.id
           FROM deliveries_live d JOIN {events} e
             ON e.tenant_id = d.tenant_id AND e.environment = d.environment AND e.id = d.event_id"
    )))
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(crate::retention::key).collect()
}

fn is_lock_timeout(err: &crate::Error) -> bool {
    let database = match err {
        crate::Error::Database(e) => e.as_database_error(),
        crate::Error::Store(courier_store::Error::Database(e)) => e.as_database_error(),
        _ => None,
    };
    // 55P03: lock_not_available, which `lock_timeout` raises.
    database.and_then(|e| e.code()).is_some_and(|code| code == "55P03")
}

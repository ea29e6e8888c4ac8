//! History by day: `events`, `deliveries` and `delivery_attempts` are partitioned by day (migration 0015).
//! Courier creates each day's partitions a week ahead, and drops a day whole, its three partitions and its events'
//! keys in one transaction, once the day is past the longest retention any tenant has and nothing in it, and no
//! live delivery anywhere, still needs it. A day that fails the check is kept and checked again on the next pass:
//! unfinished work is never lost to a drop.

use chrono::{DateTime, Duration, Utc};
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
    /// The day is gone, and its events' keys after it.
    Dropped,
    /// Something in the day is still live, or a live delivery elsewhere needs one of its events: kept.
    Live,
    /// Another transaction held a lock the drop needs for longer than it waits: try again later.
    Busy,
}

/// Drops one day whole, if nothing live needs it (see the module's doc), then forgets its events' keys.
pub async fn drop_day(pool: &PgPool, day: &Day) -> Result<Dropped> {
    let dropped = drop_partitions(pool, day).await?;
    if dropped == Dropped::Dropped {
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
    // A day's own deliveries are all finished: live ones are in `deliveries_live` (migration 0015). Check first
    // whether a live one of any day needs the day's events, so a day kept for one costs no lock.
    if needed_by_live(&mut tx, &day.suffix).await? {
        return Ok(Dropped::Live);
    }
    let outcome = async {
        // A replay reads its event (see `replay::EVENT_HELD`), so locking the day's events waits for any replay of
        // one of them and makes later ones find the event gone. Whatever such a replay queued is committed and
        // visible now, so the check is asked again before anything is dropped.
        let events = day.suffix.table("events");
        sqlx::query(sqlx::AssertSqlSafe(format!("LOCK TABLE {events} IN ACCESS EXCLUSIVE MODE")))
            .execute(&mut *tx)
            .await?;
        if needed_by_live(&mut tx, &day.suffix).await? {
            return Ok(Dropped::Live);
        }
        let attempts = day.suffix.table("delivery_attempts");
        let deliveries = day.suffix.table("deliveries");
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {attempts}, {deliveries}"))).execute(&mut *tx).await?;
        events::drop_partition(&mut tx, &day.suffix).await?;
        Ok::<_, crate::Error>(Dropped::Dropped)
    }
    .await;
    match outcome {
        Ok(Dropped::Dropped) => {
            tx.commit().await?;
            Ok(Dropped::Dropped)
        }
        Ok(other) => Ok(other),
        Err(err) if is_lock_timeout(&err) => Ok(Dropped::Busy),
        Err(err) => Err(err),
    }
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

/// Drops every day past the cutoff that nothing live needs, and forgets any keys left of days dropped before;
/// returns the days dropped and kept.
pub async fn drop_expired(pool: &PgPool, default_days: u32, now: DateTime<Utc>) -> Result<(Vec<Day>, Vec<Day>)> {
    let cutoff = cutoff(pool, default_days, now).await?;
    let (mut dropped, mut kept) = (Vec::new(), Vec::new());
    for day in days_before(pool, cutoff).await? {
        match drop_day(pool, &day).await? {
            Dropped::Dropped => dropped.push(day),
            Dropped::Live | Dropped::Busy => kept.push(day),
        }
    }
    forget_stale_keys(pool).await?;
    Ok((dropped, kept))
}

/// Whether a live delivery (a replay, or a fan-out just past midnight) is for one of the day's events.
async fn needed_by_live(conn: &mut PgConnection, suffix: &PartitionSuffix) -> Result<bool> {
    let needed: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM deliveries_live d JOIN {} e
                          ON e.tenant_id = d.tenant_id AND e.environment = d.environment AND e.id = d.event_id)",
        suffix.table("events")
    )))
    .fetch_one(conn)
    .await?;
    Ok(needed)
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

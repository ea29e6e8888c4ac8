//! Events as the emitter posted them, idempotent on `(tenant, id)`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use courier_core::{Event, EventData, EventId, EventType, TenantId};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgExecutor};

use crate::{Error, Owner, Result};

/// An event as the emitter posted it, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub id: EventId,
    pub event_type: EventType,
    /// The emitter's `created`, when it gave one; otherwise the time of ingest.
    pub created: Option<i64>,
    pub data: EventData,
}

impl NewEvent {
    /// A digest of what the emitter sent, so a repeat can be told from a different event reusing the id.
    pub fn request_hash(&self) -> Vec<u8> {
        let canonical = serde_json::json!({
            "type": self.event_type,
            "created": self.created,
            "data": self.data,
        });
        Sha256::digest(canonical.to_string().as_bytes()).to_vec()
    }
}

/// A stored event and when Courier accepted it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub event: Event,
    pub received_at: DateTime<Utc>,
}

/// What inserting an event did.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// Stored now: the caller fans it out in the same transaction.
    New(StoredEvent),
    /// The same id and body were accepted before: answer as the first time, fan out nothing.
    Repeat(StoredEvent),
    /// The id was used before for a different body.
    Conflict,
}

#[derive(sqlx::FromRow)]
struct Row {
    tenant_id: uuid::Uuid,
    id: String,
    environment: String,
    event_type: String,
    created: i64,
    data: serde_json::Value,
    received_at: DateTime<Utc>,
}

macro_rules! columns {
    () => {
        "tenant_id, id, environment, event_type, created, data, received_at"
    };
}

fn from_row(row: Row) -> Result<StoredEvent> {
    let row_name = format!("event {}", row.id);
    let event_type: EventType = row.event_type.parse().map_err(Error::corrupt(&row_name, "type"))?;
    Ok(StoredEvent {
        event: Event {
            id: EventId::parse(&row.id).map_err(Error::corrupt(&row_name, "id"))?,
            event_type,
            created: row.created,
            tenant_id: courier_core::TenantId::from_uuid(row.tenant_id),
            livemode: row
                .environment
                .parse::<courier_core::Environment>()
                .map_err(Error::corrupt(&row_name, "environment"))?
                .is_live(),
            data: EventData::parse_as(event_type, row.data).map_err(Error::corrupt(&row_name, "data"))?,
        },
        received_at: row.received_at,
    })
}

pub async fn get(db: impl PgExecutor<'_>, owner: Owner, id: &EventId) -> Result<Option<StoredEvent>> {
    let row: Option<Row> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM events WHERE (tenant_id, environment, id, received_at) =
            (SELECT tenant_id, environment, id, received_at FROM event_keys
              WHERE tenant_id = $1 AND environment = $2 AND id = $3)"
    ))
    .bind(owner.tenant.as_uuid())
    .bind(owner.environment.as_str())
    .bind(id.as_str())
    .fetch_optional(db)
    .await?;
    row.map(from_row).transpose()
}

/// Newest first. The cursor is the last page's `(received_at, id)`.
pub async fn list(
    db: impl PgExecutor<'_>,
    owner: Owner,
    before: Option<(DateTime<Utc>, &EventId)>,
    limit: u32,
) -> Result<Vec<StoredEvent>> {
    // Two statements rather than `$3 IS NULL OR …`: a generic plan (the API's sessions use only those) could not
    // seek to the cursor through the index, and every later page would walk the ones before it.
    let query = match before {
        None => sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM events WHERE tenant_id = $1 AND environment = $2 ORDER BY received_at DESC, id DESC LIMIT $3"
        )),
        Some(_) => sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM events WHERE tenant_id = $1 AND environment = $2 AND (received_at, id) < ($4, $5)
              ORDER BY received_at DESC, id DESC LIMIT $3"
        )),
    };
    let mut query = query.bind(owner.tenant.as_uuid()).bind(owner.environment.as_str()).bind(i64::from(limit));
    if let Some((at, id)) = before {
        query = query.bind(at).bind(id.as_str());
    }
    let rows: Vec<Row> = query.fetch_all(db).await?;
    rows.into_iter().map(from_row).collect()
}

/// Stores a batch of events in one statement; returns what happened to each, in order. An event is received to the
/// millisecond, the precision of the delivery ids that carry its day (migration 0023).
/// Ids repeated inside the batch behave as if posted one after another: the first is `New`, the rest repeats or
/// conflicts of it.
pub async fn insert_many(conn: &mut PgConnection, owner: Owner, new: &[NewEvent]) -> Result<Vec<Inserted>> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = new.iter().map(|e| e.id.as_str()).collect();
    let types: Vec<&str> = new.iter().map(|e| e.event_type.as_str()).collect();
    let calls: Vec<&str> = new.iter().map(|e| e.data.call_id()).collect();
    let created: Vec<Option<i64>> = new.iter().map(|e| e.created).collect();
    let data: Vec<sqlx::types::Json<&EventData>> = new.iter().map(|e| sqlx::types::Json(&e.data)).collect();
    let hashes: Vec<Vec<u8>> = new.iter().map(NewEvent::request_hash).collect();
    let inserted: Vec<Row> = sqlx::query_as(concat!(
        "WITH input AS (
            SELECT * FROM unnest($3::text[], $4::text[], $5::text[], $6::bigint[], $7::jsonb[], $8::bytea[])
                     WITH ORDINALITY AS e(id, event_type, call_id, created, data, hash, n)),
         -- The key decides which ids are new; an id repeated in the batch is new once, at its first position.
         keys AS (
            INSERT INTO event_keys (tenant_id, environment, id, received_at)
            SELECT $1, $2, id, date_trunc('milliseconds', now()) FROM input ORDER BY n
            ON CONFLICT (tenant_id, environment, id) DO NOTHING RETURNING id)
         INSERT INTO events (tenant_id, id, environment, event_type, call_id, created, data, request_hash, received_at)
         SELECT DISTINCT ON (i.id) $1, i.id, $2, i.event_type, i.call_id,
                COALESCE(i.created, extract(epoch FROM now())::bigint), i.data, i.hash, date_trunc('milliseconds', now())
           FROM input i JOIN keys USING (id)
          ORDER BY i.id, i.n
         RETURNING ",
        columns!()
    ))
    .bind(owner.tenant.as_uuid())
    .bind(owner.environment.as_str())
    .bind(&ids)
    .bind(&types)
    .bind(&calls)
    .bind(&created)
    .bind(&data)
    .bind(&hashes)
    .fetch_all(&mut *conn)
    .await?;
    let mut fresh: HashMap<String, StoredEvent> = HashMap::new();
    for row in inserted {
        let stored = from_row(row)?;
        fresh.insert(stored.event.id.as_str().to_owned(), stored);
    }
    // Everything not inserted now existed before (or earlier in this batch): fetch those once.
    let missing: Vec<&str> = ids.iter().copied().filter(|id| !fresh.contains_key(*id)).collect();
    let existing = existing_with_hashes(conn, owner, &missing).await?;
    answer_each(new, &hashes, &fresh, &existing)
}

/// These ids' stored events with the hash of the request that stored them.
async fn existing_with_hashes(
    conn: &mut PgConnection,
    owner: Owner,
    ids: &[&str],
) -> Result<HashMap<String, (Vec<u8>, StoredEvent)>> {
    #[derive(sqlx::FromRow)]
    struct Existing {
        request_hash: Vec<u8>,
        #[sqlx(flatten)]
        row: Row,
    }
    let mut existing = HashMap::new();
    if ids.is_empty() {
        return Ok(existing);
    }
    let rows: Vec<Existing> = sqlx::query_as(concat!(
        "SELECT request_hash, ",
        columns!(),
        " FROM events WHERE (tenant_id, environment, id, received_at) IN
            (SELECT tenant_id, environment, id, received_at FROM event_keys
              WHERE tenant_id = $1 AND environment = $2 AND id = ANY ($3))"
    ))
    .bind(owner.tenant.as_uuid())
    .bind(owner.environment.as_str())
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    for e in rows {
        let stored = from_row(e.row)?;
        existing.insert(stored.event.id.as_str().to_owned(), (e.request_hash, stored));
    }
    Ok(existing)
}

/// What happened to each event of a batch, in order: new (the first of its id in the batch), a repeat (same
/// request as the stored one) or a conflict (same id, different request).
fn answer_each(
    new: &[NewEvent],
    hashes: &[Vec<u8>],
    fresh: &HashMap<String, StoredEvent>,
    existing: &HashMap<String, (Vec<u8>, StoredEvent)>,
) -> Result<Vec<Inserted>> {
    let mut hashes_of_new: HashMap<&str, &[u8]> = HashMap::new();
    let mut out = Vec::with_capacity(new.len());
    for (event, hash) in new.iter().zip(hashes) {
        let id = event.id.as_str();
        if let Some(stored) = fresh.get(id) {
            match hashes_of_new.get(id) {
                None => {
                    hashes_of_new.insert(id, hash);
                    out.push(Inserted::New(stored.clone()));
                }
                Some(first) if *first == hash.as_slice() => out.push(Inserted::Repeat(stored.clone())),
                Some(_) => out.push(Inserted::Conflict),
            }
        } else {
            match existing.get(id) {
                Some((stored_hash, stored)) if stored_hash == hash => out.push(Inserted::Repeat(stored.clone())),
                Some(_) => out.push(Inserted::Conflict),
                // The key exists but not its event: its day was just dropped and the key is not forgotten yet
                // (`courier_scheduler::history`). The id is still taken until then.
                None => out.push(Inserted::Conflict),
            }
        }
    }
    Ok(out)
}

/// Deletes these events (by tenant, environment and id) and their keys, so their ids may be used again. Their
/// deliveries and attempts are the scheduler's to delete first. The caller decided they may go (retention,
/// erasure) and holds their keys locked (`courier_scheduler::retention`, [`lock_of_tenant`]).
pub async fn delete(conn: &mut PgConnection, keys: &[(Owner, EventId)]) -> Result<u64> {
    if keys.is_empty() {
        return Ok(0);
    }
    let tenants: Vec<uuid::Uuid> = keys.iter().map(|(owner, _)| owner.tenant.as_uuid()).collect();
    let environments: Vec<&str> = keys.iter().map(|(owner, _)| owner.environment.as_str()).collect();
    let ids: Vec<&str> = keys.iter().map(|(_, id)| id.as_str()).collect();
    let done = sqlx::query(
        "WITH k AS (
            DELETE FROM event_keys k USING unnest($1::uuid[], $2::text[], $3::text[]) AS x(tenant_id, environment, id)
             WHERE k.tenant_id = x.tenant_id AND k.environment = x.environment AND k.id = x.id
            RETURNING k.tenant_id, k.environment, k.id, k.received_at)
         DELETE FROM events e USING k
          WHERE e.tenant_id = k.tenant_id AND e.environment = k.environment AND e.id = k.id
            AND e.received_at = k.received_at",
    )
    .bind(&tenants)
    .bind(&environments)
    .bind(&ids)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Locks and returns up to `limit` of a tenant's events received before `before`, whatever the state of their
/// deliveries: for erasure requests.
pub async fn lock_of_tenant(
    conn: &mut PgConnection,
    tenant: TenantId,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(Owner, EventId)>> {
    let rows: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(
        // By the tenant's events (`events_received`), then each one's key (migration 0026).
        "SELECT k.tenant_id, k.environment, k.id FROM events e, event_keys k
          WHERE e.tenant_id = $1 AND e.environment IN ('live', 'test') AND e.received_at < $2
            AND k.tenant_id = e.tenant_id AND k.environment = e.environment AND k.id = e.id
            AND k.received_at = e.received_at
         LIMIT $3 FOR UPDATE OF k",
    )
    .bind(tenant.as_uuid())
    .bind(before)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(key_from_row).collect()
}

fn key_from_row((tenant, environment, id): (uuid::Uuid, String, String)) -> Result<(Owner, EventId)> {
    let row = format!("event {id}");
    let environment = environment.parse().map_err(Error::corrupt(&row, "environment"))?;
    let id = EventId::parse(&id).map_err(Error::corrupt(&row, "id"))?;
    Ok((Owner { tenant: TenantId::from_uuid(tenant), environment }, id))
}

/// Forgets up to `limit` keys of events received in `[lower, upper)` (from the beginning when `lower` is `None`),
/// whose day was dropped (`courier_scheduler::history`), so their ids may be used again; returns how many. The keys
/// of events a drop kept ([`drop_partition`]) stay: those events are in the DEFAULT partition, which a dropped day's
/// range maps to, so only it is looked at (a few rows, by its key).
pub async fn forget_keys(
    db: impl PgExecutor<'_>,
    lower: Option<DateTime<Utc>>,
    upper: DateTime<Utc>,
    limit: i64,
) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM event_keys WHERE ctid = ANY (ARRAY(
            SELECT ctid FROM event_keys k
             WHERE received_at < $2 AND received_at >= COALESCE($1, '-infinity'::timestamptz)
               AND NOT EXISTS (SELECT 1 FROM events_default e
                                WHERE e.tenant_id = k.tenant_id AND e.environment = k.environment AND e.id = k.id
                                  AND e.received_at = k.received_at)
             LIMIT $3))",
    )
    .bind(lower)
    .bind(upper)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Drops one day's partition of `events` (`events_<suffix>`) but for the events in `keep`, which a live delivery
/// still needs: those move to the DEFAULT partition (the day's range maps there once its partition is detached),
/// with their keys, until they are deleted like any event ([`delete`]). Returns how many moved. [`forget_keys`]
/// forgets the keys of the rest afterwards.
pub async fn drop_partition(
    conn: &mut PgConnection,
    suffix: &PartitionSuffix,
    keep: &[(Owner, EventId)],
) -> Result<u64> {
    let table = suffix.table("events");
    let mut kept = 0;
    if !keep.is_empty() {
        sqlx::query(sqlx::AssertSqlSafe(format!("ALTER TABLE events DETACH PARTITION {table}")))
            .execute(&mut *conn)
            .await?;
        let tenants: Vec<uuid::Uuid> = keep.iter().map(|(owner, _)| owner.tenant.as_uuid()).collect();
        let environments: Vec<&str> = keep.iter().map(|(owner, _)| owner.environment.as_str()).collect();
        let ids: Vec<&str> = keep.iter().map(|(_, id)| id.as_str()).collect();
        let moved = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO events
             SELECT e.* FROM {table} e JOIN unnest($1::uuid[], $2::text[], $3::text[]) AS k(tenant_id, environment, id)
                 ON e.tenant_id = k.tenant_id AND e.environment = k.environment AND e.id = k.id"
        )))
        .bind(&tenants)
        .bind(&environments)
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
        kept = moved.rows_affected();
    }
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}"))).execute(conn).await?;
    Ok(kept)
}

/// The day part of a history partition's name: `YYYYMMDD` or `legacy` (the tables as they were before
/// partitioning). Only these are ever dropped; `default` is not one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSuffix(String);

impl PartitionSuffix {
    pub fn parse(s: &str) -> Option<Self> {
        let is_day = s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit());
        (is_day || s == "legacy").then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The partition of `table` for this day, quoted for SQL (the suffix is digits or `legacy`, so nothing needs
    /// escaping).
    pub fn table(&self, table: &str) -> String {
        format!("\"{table}_{}\"", self.0)
    }
}

//! Events as the emitter posted them, idempotent on `(tenant, id)`.

use chrono::{DateTime, Utc};
use courier_core::{Event, EventData, EventId, EventType};
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
    let corrupt = |what: &str| Error::Corrupt(format!("event {}: {what}", row.id));
    Ok(StoredEvent {
        event: Event {
            id: EventId::parse(&row.id).map_err(|_| corrupt("id"))?,
            event_type: row.event_type.parse().map_err(|_| corrupt("type"))?,
            created: row.created,
            tenant_id: courier_core::TenantId::from_uuid(row.tenant_id),
            livemode: row
                .environment
                .parse::<courier_core::Environment>()
                .map_err(|_| corrupt("environment"))?
                .is_live(),
            data: EventData::parse(row.data).map_err(|_| corrupt("data"))?,
        },
        received_at: row.received_at,
    })
}

/// Stores an event unless its id is taken. Concurrent inserts of one id serialise on the primary key:
/// exactly one sees `New`, the others `Repeat` or `Conflict`.
pub async fn insert(conn: &mut PgConnection, owner: Owner, new: &NewEvent) -> Result<Inserted> {
    let hash = new.request_hash();
    let inserted: Option<Row> = sqlx::query_as(concat!(
        "INSERT INTO events (tenant_id, id, environment, event_type, call_id, created, data, request_hash)
         VALUES ($1, $2, $3, $4, $5, COALESCE($6, extract(epoch FROM now())::bigint), $7, $8)
         ON CONFLICT (tenant_id, id) DO NOTHING RETURNING ",
        columns!()
    ))
    .bind(owner.tenant.as_uuid())
    .bind(new.id.as_str())
    .bind(owner.environment.as_str())
    .bind(new.event_type.as_str())
    .bind(new.data.call_id())
    .bind(new.created)
    .bind(sqlx::types::Json(&new.data))
    .bind(&hash)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = inserted {
        return Ok(Inserted::New(from_row(row)?));
    }
    #[derive(sqlx::FromRow)]
    struct Existing {
        request_hash: Vec<u8>,
        #[sqlx(flatten)]
        row: Row,
    }
    let existing: Existing =
        sqlx::query_as(concat!("SELECT request_hash, ", columns!(), " FROM events WHERE tenant_id = $1 AND id = $2"))
            .bind(owner.tenant.as_uuid())
            .bind(new.id.as_str())
            .fetch_one(&mut *conn)
            .await?;
    // A repeat must also come from the same environment: a test key may not replay a live event's id.
    if existing.request_hash == hash && existing.row.environment == owner.environment.as_str() {
        Ok(Inserted::Repeat(from_row(existing.row)?))
    } else {
        Ok(Inserted::Conflict)
    }
}

pub async fn get(db: impl PgExecutor<'_>, owner: Owner, id: &EventId) -> Result<Option<StoredEvent>> {
    let row: Option<Row> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM events WHERE tenant_id = $1 AND environment = $2 AND id = $3"
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
    let rows: Vec<Row> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM events WHERE tenant_id = $1 AND environment = $2
          AND ($3::timestamptz IS NULL OR (received_at, id) < ($3, $4))
          ORDER BY received_at DESC, id DESC LIMIT $5"
    ))
    .bind(owner.tenant.as_uuid())
    .bind(owner.environment.as_str())
    .bind(before.map(|(at, _)| at))
    .bind(before.map(|(_, id)| id.as_str()))
    .bind(i64::from(limit))
    .fetch_all(db)
    .await?;
    rows.into_iter().map(from_row).collect()
}

//! Events as the emitter posted them, idempotent on `(tenant, id)`.

use chrono::{DateTime, Utc};
use courier_core::{Event, EventData, EventId, EventType};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgExecutor};

use crate::{Error, Owner, Result};

mod insert;
mod removal;

pub use insert::{Batch, Fresh};
pub use removal::{PartitionSuffix, delete, drop_partition, forget_keys, lock_of_tenant};

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
    /// Stored now: fanned out by the same statement (`courier_scheduler::fanout`).
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
use columns;

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

/// Stores a batch of events, without fanning them out (the store's own use; ingest stores events with their
/// deliveries, `courier_scheduler::fanout`); returns what happened to each, in order. Ids repeated inside the batch
/// behave as if posted one after another: the first is `New`, the rest repeats or conflicts of it.
pub async fn insert_many(conn: &mut PgConnection, owner: Owner, new: &[NewEvent]) -> Result<Vec<Inserted>> {
    let batch = Batch::new(owner, new);
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let fresh: Vec<Fresh> = batch
        .bind(sqlx::query_as(concat!(
            crate::insert_events!(),
            " SELECT id AS event_id, created, received_at, data FROM new_events"
        )))
        .fetch_all(&mut *conn)
        .await?;
    batch.answer(conn, &fresh).await
}

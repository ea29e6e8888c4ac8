//! Storing new events: the statement that inserts a batch (idempotent on `(tenant, id)`), which fan-out embeds,
//! and the answer for each event of it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use courier_core::{Event, EventData};
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::{PgConnection, Postgres};

use super::{Inserted, NewEvent, Row, StoredEvent, columns, from_row};
use crate::{Error, Owner, Result};

/// The opening of a statement that stores a batch of new events, bound as `$1`–`$8` by [`Batch::bind`]. It names
/// `input(id, event_type, call_id, created, data, hash, n)`, the batch by position; `keys`, the ids new now; and
/// `new_events(id, event_type, call_id, created, received_at, data, n)`, each event stored now at its first position.
/// The key decides which ids are new: an id repeated in the batch is new once, at its first position. An event is
/// received to the millisecond, the precision of the delivery ids that carry its day (migration 0023).
///
/// Fan-out (`courier_scheduler::queue::enqueue`) continues it with the new events' deliveries, so that an event and
/// its deliveries are one statement; [`super::insert_many`] continues it with nothing.
#[macro_export]
macro_rules! insert_events {
    () => {
        "WITH input AS (
            SELECT * FROM unnest($3::text[], $4::text[], $5::text[], $6::bigint[], $7::jsonb[], $8::bytea[])
                     WITH ORDINALITY AS e(id, event_type, call_id, created, data, hash, n)),
         keys AS (
            INSERT INTO event_keys (tenant_id, environment, id, received_at)
            SELECT $1, $2, id, date_trunc('milliseconds', now()) FROM input ORDER BY n
            ON CONFLICT (tenant_id, environment, id) DO NOTHING RETURNING id),
         stored_events AS (
            INSERT INTO events (tenant_id, id, environment, event_type, call_id, created, data, request_hash,
                                received_at)
            SELECT DISTINCT ON (i.id) $1, i.id, $2, i.event_type, i.call_id,
                   COALESCE(i.created, extract(epoch FROM now())::bigint), i.data, i.hash,
                   date_trunc('milliseconds', now())
              FROM input i JOIN keys USING (id)
             ORDER BY i.id, i.n
            RETURNING id, created, received_at, data),
         new_events AS (
            SELECT DISTINCT ON (s.id) s.id, i.event_type, i.call_id, s.created, s.received_at, s.data, i.n
              FROM stored_events s JOIN input i USING (id)
             ORDER BY s.id, i.n)"
    };
}

/// A batch of new events as the columns [`insert_events`] binds, and what each request hashed to.
pub struct Batch<'a> {
    owner: Owner,
    new: &'a [NewEvent],
    ids: Vec<&'a str>,
    types: Vec<&'a str>,
    calls: Vec<&'a str>,
    created: Vec<Option<i64>>,
    data: Vec<sqlx::types::Json<&'a EventData>>,
    hashes: Vec<Vec<u8>>,
}

/// One event a statement opened by [`insert_events`] stored, as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Fresh {
    #[sqlx(rename = "event_id")]
    pub id: String,
    pub created: i64,
    pub received_at: DateTime<Utc>,
    pub data: serde_json::Value,
}

impl<'a> Batch<'a> {
    pub fn new(owner: Owner, new: &'a [NewEvent]) -> Self {
        Self {
            owner,
            new,
            ids: new.iter().map(|e| e.id.as_str()).collect(),
            types: new.iter().map(|e| e.event_type.as_str()).collect(),
            calls: new.iter().map(|e| e.data.call_id()).collect(),
            created: new.iter().map(|e| e.created).collect(),
            data: new.iter().map(|e| sqlx::types::Json(&e.data)).collect(),
            hashes: new.iter().map(NewEvent::request_hash).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.new.len()
    }

    pub fn is_empty(&self) -> bool {
        self.new.is_empty()
    }

    /// Binds `$1`–`$8` of a statement opened by [`insert_events`]; the caller binds its own from `$9`.
    pub fn bind<'q, O>(
        &'q self,
        query: QueryAs<'q, Postgres, O, PgArguments>,
    ) -> QueryAs<'q, Postgres, O, PgArguments> {
        query
            .bind(self.owner.tenant.as_uuid())
            .bind(self.owner.environment.as_str())
            .bind(&self.ids)
            .bind(&self.types)
            .bind(&self.calls)
            .bind(&self.created)
            .bind(&self.data)
            .bind(&self.hashes)
    }

    /// What happened to each event, in order, given those the statement stored: new (the first of its id in the
    /// batch), or else a repeat or a conflict of the event stored before (looked up here, a read only) or earlier
    /// in the batch.
    pub async fn answer(&self, conn: &mut PgConnection, fresh: &[Fresh]) -> Result<Vec<Inserted>> {
        let mut first: HashMap<&str, &NewEvent> = HashMap::with_capacity(self.new.len());
        for event in self.new {
            first.entry(event.id.as_str()).or_insert(event);
        }
        let mut stored: HashMap<String, StoredEvent> = HashMap::with_capacity(fresh.len());
        for row in fresh {
            let Some(event) = first.get(row.id.as_str()) else {
                return Err(Error::corrupt(format!("event {}", row.id), "id")("not in the batch that stored it"));
            };
            stored.insert(row.id.clone(), self.stored(event, row)?);
        }
        // Everything not inserted now existed before (or earlier in this batch): fetch those once.
        let missing: Vec<&str> = self.ids.iter().copied().filter(|id| !stored.contains_key(*id)).collect();
        let existing = existing_with_hashes(conn, self.owner, &missing).await?;
        answer_each(self.new, &self.hashes, &stored, &existing)
    }

    /// A new event as stored: its data as PostgreSQL returned it, so its first attempt (handed over in memory)
    /// sends what every later attempt and the log read back (jsonb keeps numbers as decimals: `1e16` comes back as
    /// `10000000000000000`).
    fn stored(&self, event: &NewEvent, row: &Fresh) -> Result<StoredEvent> {
        let data = EventData::parse_as(event.event_type, row.data.clone())
            .map_err(Error::corrupt(format!("event {}", row.id), "data"))?;
        Ok(StoredEvent {
            event: Event {
                id: event.id.clone(),
                event_type: event.event_type,
                created: row.created,
                tenant_id: self.owner.tenant,
                livemode: self.owner.environment.is_live(),
                data,
            },
            received_at: row.received_at,
        })
    }
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

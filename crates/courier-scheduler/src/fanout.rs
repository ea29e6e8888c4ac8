//! [`store_events`], the one place an event enters the queue (ingest, Courier's operational events and the portal's
//! test events all call it): the events, and their deliveries (one per active webhook whose filter matches,
//! pending, waiting for their call, or leased for the handover), in one statement
//! (`crate::queue::enqueue::store_and_fan_out`).

use std::collections::HashMap;

use courier_core::EventId;
use courier_store::Owner;
use courier_store::events::{Batch, Inserted, NewEvent};
use sqlx::{PgConnection, PgExecutor};

use crate::Result;
use crate::handover::Reserved;
pub use crate::queue::enqueue::{Enqueued, Route};

/// Events stored and fanned out.
pub struct EventsStored {
    /// Per event, in order: new, a repeat of a stored one, or a conflict with it.
    pub inserted: Vec<Inserted>,
    /// Per event, in order: the deliveries it fanned out to, when it was new.
    pub deliveries: Vec<Option<u64>>,
    /// The journal row of the deliveries handed over, and those deliveries.
    pub(crate) handed: Option<(i64, Vec<crate::queue::enqueue::Handed>)>,
}

/// Inserts `events` for `owner` (`routes[i]` routes `events[i]`) and fans out those that are new. The events and
/// their deliveries are written by one statement, so an event and its deliveries commit together even outside a
/// transaction (ingest runs one owner's batch so); what follows it only reads (the answer to a repeat). `lease` is
/// as for [`store_and_fan_out`](crate::queue::enqueue::store_and_fan_out).
pub async fn store_events(
    conn: &mut PgConnection,
    owner: Owner,
    events: &[NewEvent],
    routes: &[Route<'_>],
    lease: Option<&Reserved>,
) -> Result<EventsStored> {
    let batch = Batch::new(owner, events);
    let enqueued = crate::queue::enqueue::store_and_fan_out(conn, &batch, routes, lease).await?;
    let inserted = batch.answer(conn, &enqueued.fresh).await?;
    let deliveries = inserted
        .iter()
        .map(|i| match i {
            Inserted::New(s) => Some(enqueued.counts.get(s.event.id.as_str()).copied().unwrap_or(0)),
            _ => None,
        })
        .collect();
    Ok(EventsStored { inserted, deliveries, handed: enqueued.handed })
}

/// How many deliveries each of these events fanned out to when it was first accepted (replays excluded): the
/// answer an idempotent repeat gets. Events without deliveries are absent from the map.
pub async fn counts(db: impl PgExecutor<'_>, owner: Owner, events: &[&EventId]) -> Result<HashMap<String, u64>> {
    let ids: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
    // A delivery handed over in memory is in the journal until its first attempt writes it (`queue::journal`).
    let rows: Vec<(String, i64)> = sqlx::query_as(concat!(
        "SELECT event_id, count(*) FROM (
            SELECT event_id FROM deliveries
             WHERE tenant_id = $1 AND environment = $2 AND event_id = ANY ($3) AND replay_of IS NULL
            UNION ALL
            SELECT x.event_id FROM delivery_handovers h, ",
        crate::queue::journal::journal_deliveries!(),
        " WHERE h.tenant_id = $1 AND h.environment = $2 AND x.event_id = ANY ($3)
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = x.id)) c
         GROUP BY event_id"
    ))
    .bind(owner.tenant.as_uuid())
    .bind(owner.environment.as_str())
    .bind(&ids)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(id, n)| (id, n as u64)).collect())
}

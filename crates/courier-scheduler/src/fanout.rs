//! [`store_events`], the one place an event enters the queue (ingest, Courier's operational events and the portal's
//! test events all call it): the events, and their deliveries (one per active webhook whose filter matches,
//! pending, waiting for their call, or leased for the handover: `crate::queue::enqueue::fan_out` writes them),
//! inside the caller's transaction.

use std::collections::HashMap;

use courier_core::{EventId, TraceParent, WebhookId};
use courier_store::Owner;
use courier_store::events::{self, Inserted, NewEvent};
use sqlx::{PgConnection, PgExecutor};

use crate::Result;
use crate::handover::Reserved;
pub use crate::queue::enqueue::{Enqueued, FanoutEvent};

/// Where one event's deliveries go besides the tenant's matching webhooks, and what they carry.
#[derive(Debug, Clone, Copy, Default)]
pub struct Route<'a> {
    /// The trace context of the request that brought the event.
    pub trace: Option<TraceParent>,
    /// An operational event's webhook, which never receives it.
    pub about: Option<&'a WebhookId>,
    /// A test event's one webhook.
    pub only: Option<&'a WebhookId>,
}

/// Events stored and fanned out.
pub struct EventsStored {
    /// Per event, in order: new, a repeat of a stored one, or a conflict with it.
    pub inserted: Vec<Inserted>,
    /// Per event, in order: the deliveries it fanned out to, when it was new.
    pub deliveries: Vec<Option<u64>>,
    /// The journal row of the deliveries handed over, and those deliveries.
    pub(crate) handed: Option<(i64, Vec<crate::queue::enqueue::Handed>)>,
}

/// Inserts `events` for `owner` (`routes[i]` routes `events[i]`) and fans out those that are new, in the caller's
/// transaction, so an event and its deliveries commit together. `lease` is as for
/// [`fan_out`](crate::queue::enqueue::fan_out).
pub async fn store_events(
    conn: &mut PgConnection,
    owner: Owner,
    events: &[NewEvent],
    routes: &[Route<'_>],
    lease: Option<&Reserved>,
) -> Result<EventsStored> {
    let inserted = events::insert_many(&mut *conn, owner, events).await?;
    let fresh: Vec<FanoutEvent<'_>> = inserted
        .iter()
        .zip(routes.iter().copied().chain(std::iter::repeat(Route::default())))
        .filter_map(|(i, route)| match i {
            Inserted::New(s) => Some(FanoutEvent {
                id: &s.event.id,
                event_type: s.event.event_type,
                call_id: s.event.data.call_id(),
                received_at: s.received_at,
                trace: route.trace,
                about: route.about,
                only: route.only,
            }),
            _ => None,
        })
        .collect();
    let enqueued = crate::queue::enqueue::fan_out(conn, owner, &fresh, lease).await?;
    drop(fresh);
    let mut counts = enqueued.counts.into_iter();
    let deliveries =
        inserted.iter().map(|i| matches!(i, Inserted::New(_)).then(|| counts.next().unwrap_or(0))).collect();
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

//! Fan-out: one pending delivery per enabled webhook whose filter matches, inside the caller's transaction; and
//! [`store_events`], the one place an event enters the queue (ingest, Courier's operational events and the
//! portal's test events all call it).

use std::collections::HashMap;

use courier_core::{EventId, EventType, TraceParent, WebhookId};
use courier_store::Owner;
use courier_store::events::{self, Inserted, NewEvent};
use sqlx::{PgConnection, PgExecutor};

use crate::handover::Reserved;
use crate::{DeliveryStatus, Result};

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
#[derive(Debug)]
pub struct EventsStored {
    /// Per event, in order: new, a repeat of a stored one, or a conflict with it.
    pub inserted: Vec<Inserted>,
    /// Per event, in order: the deliveries it fanned out to, when it was new.
    pub deliveries: Vec<Option<u64>>,
    /// The deliveries leased for handover, as `(event id, delivery id)`.
    pub leased: Vec<(String, String)>,
}

/// Inserts `events` for `owner` (`routes[i]` routes `events[i]`) and fans out those that are new, in the caller's
/// transaction, so an event and its deliveries commit together. `lease` is as for [`enqueue`].
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
                trace: route.trace,
                about: route.about,
                only: route.only,
            }),
            _ => None,
        })
        .collect();
    let enqueued = enqueue(conn, owner, &fresh, lease).await?;
    drop(fresh);
    let mut counts = enqueued.counts.into_iter();
    let deliveries =
        inserted.iter().map(|i| matches!(i, Inserted::New(_)).then(|| counts.next().unwrap_or(0))).collect();
    Ok(EventsStored { inserted, deliveries, leased: enqueued.leased })
}

/// What fan-out needs to know of one event.
#[derive(Debug, Clone, Copy)]
pub struct FanoutEvent<'a> {
    pub id: &'a EventId,
    pub event_type: EventType,
    pub call_id: &'a str,
    /// The trace context of the request that brought the event, for its deliveries' attempts to link to.
    pub trace: Option<TraceParent>,
    /// For an operational event, the webhook it is about: never delivered to that webhook itself.
    pub about: Option<&'a WebhookId>,
    /// A test event sent from the portal goes to this one webhook only (still subject to its filter).
    pub only: Option<&'a WebhookId>,
}

/// What one fan-out enqueued.
#[derive(Debug, Default)]
pub struct Enqueued {
    /// Deliveries per event, in the order of the events.
    pub counts: Vec<u64>,
    /// The deliveries leased for handover (see [`crate::handover`]), as `(event id, delivery id)`.
    pub leased: Vec<(String, String)>,
}

// Long because it is one set-based statement (which webhooks, which wait, which are leased, in what order) and its
// binds.
/// Enqueues the deliveries of many events in one statement. Runs in the caller's transaction so that an event is
/// never stored without its deliveries, nor the other way round. It does not wake the workers: after committing,
/// the caller does ([`crate::wake::Notifier`]); a `NOTIFY` in this transaction would serialise every ingest commit.
///
/// With `lease`, up to its count of the deliveries that may go at once (not waiting for their call, to a webhook
/// without a rate limit) are enqueued already leased to this process's worker, as a claim would leave them.
pub(crate) async fn enqueue(
    conn: &mut PgConnection,
    owner: Owner,
    events: &[FanoutEvent<'_>],
    lease: Option<&Reserved>,
) -> Result<Enqueued> {
    if events.is_empty() {
        return Ok(Enqueued::default());
    }
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let calls: Vec<&str> = events.iter().map(|e| e.call_id).collect();
    let traces: Vec<Option<String>> = events.iter().map(|e| e.trace.map(|t| t.to_string())).collect();
    let abouts: Vec<Option<&str>> = events.iter().map(|e| e.about.map(WebhookId::as_str)).collect();
    let onlys: Vec<Option<&str>> = events.iter().map(|e| e.only.map(WebhookId::as_str)).collect();
    let operational: Vec<&str> = EventType::OPERATIONAL.iter().map(|t| t.as_str()).collect();
    let (leases, lease_for) = lease.map_or((0, std::time::Duration::ZERO), |r| (r.count() as i64, r.skew + r.lease));
    // Per-call ordering (see `crate::ordering`): a delivery to an ordered webhook waits when its call already has a
    // live delivery there, or an earlier event of this statement does. `call_seq` is this statement's sequence
    // number (statement order) then the event's position (array order; group commit appends requests in order).
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "WITH e AS (SELECT * FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $10::text[],
                                    $12::text[])
                             WITH ORDINALITY AS e(id, event_type, call_id, trace_parent, about, only_to, n)),
         base AS (SELECT nextval('delivery_call_seq') AS b),
         targets AS (
            SELECT e.id AS event_id, e.event_type, e.call_id, e.trace_parent, e.n, w.id AS webhook_id, w.tenant_id,
                   w.environment, w.max_attempts, w.include_transcript, w.include_metrics,
                   (w.ordering = 'call' AND e.call_id <> '') AS ordered,
                   w.rate_limit_per_second IS NULL AS unlimited,
                   row_number() OVER (PARTITION BY w.id, e.call_id ORDER BY e.n) AS nth
              FROM e JOIN webhooks w
                ON w.tenant_id = $1 AND w.environment = $2 AND w.active
               -- `*` (NULL) is every call event; operational events go only where they are named, and never to
               -- the webhook they are about.
               AND ((w.event_types IS NULL AND NOT e.event_type = ANY ($11)) OR e.event_type = ANY (w.event_types))
               AND (e.about IS NULL OR w.id <> e.about)
               AND (e.only_to IS NULL OR w.id = e.only_to)
         ),
         decided AS (
            SELECT t.*, t.ordered AND (t.nth > 1 OR EXISTS (
                       SELECT 1 FROM deliveries_live p WHERE p.webhook_id = t.webhook_id AND p.call_id = t.call_id
                                                    AND p.call_seq IS NOT NULL AND p.status = ANY ($9))) AS waits
              FROM targets t
         ),
         -- The first `$13` that may go at once are leased to this process's worker (a rate-limited webhook's
         -- deliveries take their slots through the claim).
         leased AS (
            SELECT d.*, NOT d.waits AND d.unlimited AND row_number() OVER (
                       PARTITION BY NOT d.waits AND d.unlimited ORDER BY d.n, d.webhook_id) <= $13 AS handed
              FROM decided d
         ),
         inserted AS (
            INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status,
                                    attempt_count, max_attempts, next_attempt_at, lease_expires_at, trace_parent,
                                    call_seq, include_transcript, include_metrics)
            SELECT courier_id('dlv_'), d.tenant_id, d.environment, d.event_id, d.webhook_id, d.event_type, d.call_id,
                   CASE WHEN d.waits THEN $8 WHEN d.handed THEN $15 ELSE $7 END, CASE WHEN d.handed THEN 1 ELSE 0 END,
                   d.max_attempts, CASE WHEN NOT d.waits AND NOT d.handed THEN now() END,
                   CASE WHEN d.handed THEN now() + $14 END,
                   d.trace_parent, CASE WHEN d.ordered THEN base.b * 65536 + d.n END,
                   d.include_transcript, d.include_metrics
              FROM leased d, base
             ORDER BY d.event_id, d.webhook_id
            RETURNING event_id, id, status = $15
         )
         SELECT * FROM inserted",
    )
    .bind(owner.tenant.as_uuid())
    .bind(owner.environment.as_str())
    .bind(&ids)
    .bind(&types)
    .bind(&calls)
    .bind(&traces)
    .bind(DeliveryStatus::Pending)
    .bind(DeliveryStatus::Waiting)
    .bind(crate::ordering::LIVE)
    .bind(&abouts)
    .bind(&operational)
    .bind(&onlys)
    .bind(leases)
    .bind(lease_for)
    .bind(DeliveryStatus::Delivering)
    .fetch_all(&mut *conn)
    .await?;
    let mut per_event: HashMap<&str, u64> = HashMap::new();
    for (event, _, _) in &rows {
        *per_event.entry(event.as_str()).or_default() += 1;
    }
    let counts = events.iter().map(|e| per_event.get(e.id.as_str()).copied().unwrap_or(0)).collect();
    let leased = rows.into_iter().filter(|(_, _, handed)| *handed).map(|(event, id, _)| (event, id)).collect();
    Ok(Enqueued { counts, leased })
}

/// How many deliveries each of these events fanned out to when it was first accepted (replays excluded): the
/// answer an idempotent repeat gets. Events without deliveries are absent from the map.
pub async fn counts(db: impl PgExecutor<'_>, owner: Owner, events: &[&EventId]) -> Result<HashMap<String, u64>> {
    let ids: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event_id, count(*) FROM deliveries
         WHERE tenant_id = $1 AND environment = $2 AND event_id = ANY ($3) AND replay_of IS NULL GROUP BY event_id",
    )
    .bind(owner.tenant.as_uuid())
    .bind(owner.environment.as_str())
    .bind(&ids)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(id, n)| (id, n as u64)).collect())
}

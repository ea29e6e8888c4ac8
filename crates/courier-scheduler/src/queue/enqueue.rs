//! Enqueueing: new events with their deliveries (fan-out, from ingest, operational and test events alike) and
//! replays.

use std::collections::HashMap;

use courier_core::{EventType, TraceParent, WebhookId};
use courier_store::events::{Batch, Fresh};
use sqlx::PgConnection;

use crate::handover::Reserved;
use crate::{DeliveryStatus, Result};

/// Where one event's deliveries go besides the tenant's matching webhooks, and what they carry.
#[derive(Debug, Clone, Copy, Default)]
pub struct Route<'a> {
    /// The trace context of the request that brought the event, for its deliveries' attempts to link to.
    pub trace: Option<TraceParent>,
    /// An operational event's webhook, which never receives it.
    pub about: Option<&'a WebhookId>,
    /// A test event sent from the portal goes to this one webhook only (still subject to its filter).
    pub only: Option<&'a WebhookId>,
}

/// What one statement stored and enqueued.
#[derive(Default)]
pub struct Enqueued {
    /// The events new now.
    pub fresh: Vec<Fresh>,
    /// Deliveries per new event that has any, by event id.
    pub counts: HashMap<String, u64>,
    /// The journal row of the deliveries handed over (see [`crate::handover`]), and those deliveries.
    pub(crate) handed: Option<(i64, Vec<Handed>)>,
}

// Long because it is one set-based statement (which webhooks, which wait, which are leased, in what order) and its
// binds.
/// Stores a batch of events and enqueues the deliveries of those that are new, in one statement: an event is
/// never stored without its deliveries, nor the other way round, even outside a transaction (ingest runs a lone
/// owner's batch as just this statement). `routes[i]` routes the batch's event `i` (default past its end). It
/// does not wake the workers: after committing, the caller does ([`crate::wake::Notifier`]); a `NOTIFY` here would
/// serialise every ingest commit.
///
/// With `lease`, up to its count of the deliveries that may go at once (not waiting for their call, not ordered, to
/// a webhook without a rate limit) are handed over to this process's worker: not written to `deliveries` until
/// their first attempt ends, one journal row for them all (`super::journal`).
pub async fn store_and_fan_out(
    conn: &mut PgConnection,
    batch: &Batch<'_>,
    routes: &[Route<'_>],
    lease: Option<&Reserved>,
) -> Result<Enqueued> {
    if batch.is_empty() {
        return Ok(Enqueued::default());
    }
    let routes: Vec<Route<'_>> =
        routes.iter().copied().chain(std::iter::repeat(Route::default())).take(batch.len()).collect();
    let traces: Vec<Option<String>> = routes.iter().map(|r| r.trace.map(|t| t.to_string())).collect();
    let abouts: Vec<Option<&str>> = routes.iter().map(|r| r.about.map(WebhookId::as_str)).collect();
    let onlys: Vec<Option<&str>> = routes.iter().map(|r| r.only.map(WebhookId::as_str)).collect();
    let operational: Vec<&str> = EventType::OPERATIONAL.iter().map(|t| t.as_str()).collect();
    let (leases, lease_for) = lease.map_or((0, std::time::Duration::ZERO), |r| (r.count() as i64, r.skew + r.lease));
    // Per-call ordering (see `super::ordering`): a delivery to an ordered webhook waits when its call already has a
    // live delivery there, or an earlier event of this statement does. `call_seq` is this statement's sequence
    // number (statement order) then the event's position (array order; group commit appends requests in order).
    let rows: Vec<Row> = batch
        .bind(sqlx::query_as(concat!(
            courier_store::insert_events!(),
            ",
         routes AS (SELECT * FROM unnest($9::text[], $10::text[], $11::text[])
                                  WITH ORDINALITY AS r(trace_parent, about, only_to, n)),
         -- `n` numbers the new events only, as `call_seq` has room for 65,536 of them per statement.
         e AS (SELECT ne.id, ne.event_type, ne.call_id, r.trace_parent, r.about, r.only_to, ne.received_at,
                      row_number() OVER (ORDER BY n) AS n
                 FROM new_events ne JOIN routes r USING (n)),
         base AS (SELECT nextval('delivery_call_seq') AS b),
         targets AS (
            SELECT e.id AS event_id, e.event_type, e.call_id, e.trace_parent, e.received_at, e.n,
                   w.id AS webhook_id, w.tenant_id,
                   w.environment, w.max_attempts, w.include_transcript, w.include_metrics,
                   (w.ordering = 'call' AND e.call_id <> '') AS ordered,
                   w.rate_limit_per_second IS NULL AS unlimited,
                   row_number() OVER (PARTITION BY w.id, e.call_id ORDER BY e.n) AS nth
              FROM e JOIN webhooks w
                ON w.tenant_id = $1 AND w.environment = $2 AND w.active
               -- `*` (NULL) is every call event; operational events go only where they are named, and never to
               -- the webhook they are about.
               AND ((w.event_types IS NULL AND NOT e.event_type = ANY ($12)) OR e.event_type = ANY (w.event_types))
               AND (e.about IS NULL OR w.id <> e.about)
               AND (e.only_to IS NULL OR w.id = e.only_to)
         ),
         decided AS (
            SELECT t.*, t.ordered AND (t.nth > 1 OR EXISTS (
                       SELECT 1 FROM deliveries_live p WHERE p.webhook_id = t.webhook_id AND p.call_id = t.call_id
                                                    AND p.call_seq IS NOT NULL AND p.status = ANY ($15))) AS waits
              FROM targets t
         ),
         -- The first `$16` that may go at once are handed over to this process's worker (not those waiting for
         -- their call or to an ordered webhook: the call's next delivery must see them in the queue; a rate-limited
         -- webhook's deliveries take their slots through the claim; nor those to a webhook the worker holds its
         -- share of, `$18`, which it would hand back).
         leased AS (
            SELECT d.*, courier_id_at('dlv_', d.received_at) AS id,
                   d.may_go AND row_number() OVER (PARTITION BY d.may_go ORDER BY d.n, d.webhook_id) <= $16 AS handed
              FROM (SELECT d.*, NOT d.waits AND NOT d.ordered AND d.unlimited AND d.webhook_id <> ALL ($18) AS may_go
                      FROM decided d) d
         ),
         inserted AS (
            INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status,
                                    max_attempts, next_attempt_at, trace_parent, call_seq, include_transcript,
                                    include_metrics, event_received_at)
            SELECT d.id, d.tenant_id, d.environment, d.event_id, d.webhook_id, d.event_type, d.call_id,
                   CASE WHEN d.waits THEN $14 ELSE $13 END, d.max_attempts, CASE WHEN NOT d.waits THEN now() END,
                   d.trace_parent, CASE WHEN d.ordered THEN base.b * 65536 + d.n END,
                   d.include_transcript, d.include_metrics, d.received_at
              FROM leased d, base
             WHERE NOT d.handed
             ORDER BY d.event_id, d.webhook_id
            RETURNING event_id, id
         ),
         -- Those handed over are written once, by their first attempt; until then one journal row stands for them
         -- (`super::journal`).
         journal AS (
            INSERT INTO delivery_handovers (tenant_id, environment, lease_expires_at, delivery_ids, event_ids,
                                            webhook_ids, event_types, call_ids, max_attempts, trace_parents,
                                            include_transcript, include_metrics)
            SELECT $1, $2, now() + $17, array_agg(id ORDER BY n, webhook_id), array_agg(event_id ORDER BY n, webhook_id),
                   array_agg(webhook_id ORDER BY n, webhook_id), array_agg(event_type ORDER BY n, webhook_id),
                   array_agg(call_id ORDER BY n, webhook_id), array_agg(max_attempts ORDER BY n, webhook_id),
                   array_agg(trace_parent ORDER BY n, webhook_id), array_agg(include_transcript ORDER BY n, webhook_id),
                   array_agg(include_metrics ORDER BY n, webhook_id)
              FROM leased WHERE handed
            HAVING count(*) > 0
            RETURNING id
         ),
         -- Those handed over come back with what the worker needs of them (the events it has in memory).
         fanned AS (
            SELECT event_id, id, NULL::bigint AS journal, NULL::int AS max_attempts, NULL::text AS trace_parent,
                   NULL::text AS webhook_id, NULL::bool AS include_transcript, NULL::bool AS include_metrics
              FROM inserted
            UNION ALL
            SELECT l.event_id, l.id, j.id, l.max_attempts, l.trace_parent, l.webhook_id, l.include_transcript,
                   l.include_metrics
              FROM leased l, journal j WHERE l.handed
         ),
         numbered AS (SELECT f.*, row_number() OVER (PARTITION BY f.event_id) AS k FROM fanned f)
         -- Each new event, with each of its deliveries (or none); its data on its first row only.
         SELECT ne.id AS event_id, ne.created, ne.received_at, CASE WHEN d.k IS NULL OR d.k = 1 THEN ne.data END AS data,
                d.id, d.journal, d.max_attempts, d.trace_parent, ",
            crate::claim::webhook_columns!(),
            " FROM new_events ne LEFT JOIN numbered d ON d.event_id = ne.id
              LEFT JOIN webhooks w ON d.journal IS NOT NULL AND w.id = d.webhook_id
             ORDER BY ne.n, d.k"
        )))
        .bind(&traces)
        .bind(&abouts)
        .bind(&onlys)
        .bind(&operational)
        .bind(DeliveryStatus::Pending)
        .bind(DeliveryStatus::Waiting)
        .bind(crate::ordering::LIVE)
        .bind(leases)
        .bind(lease_for)
        .bind(lease.map(Reserved::full_webhooks).unwrap_or_default())
        .fetch_all(&mut *conn)
        .await?;
    let mut enqueued = Enqueued::default();
    for row in rows {
        // An event's first row (ordered so) carries its data.
        if let Some(data) = row.data {
            let (id, created, received_at) = (row.event_id.clone(), row.created, row.received_at);
            enqueued.fresh.push(Fresh { id, created, received_at, data });
        }
        let Some(id) = row.id else { continue };
        *enqueued.counts.entry(row.event_id.clone()).or_default() += 1;
        if let Some(journal) = row.journal {
            let (_, handed) = enqueued.handed.get_or_insert_with(|| (journal, Vec::new()));
            let (Some(max_attempts), Some(webhook)) = (row.max_attempts, row.webhook.0) else { continue };
            handed.push(Handed { id, event_id: row.event_id, max_attempts, trace_parent: row.trace_parent, webhook });
        }
    }
    Ok(enqueued)
}

/// One row of [`store_and_fan_out`]'s statement: a new event (its data on its first row only), and one of its
/// deliveries if it has any; for one handed over, its journal row and what the worker needs of it.
#[derive(sqlx::FromRow)]
struct Row {
    event_id: String,
    created: i64,
    received_at: chrono::DateTime<chrono::Utc>,
    data: Option<serde_json::Value>,
    id: Option<String>,
    journal: Option<i64>,
    max_attempts: Option<i32>,
    trace_parent: Option<String>,
    #[sqlx(flatten)]
    webhook: crate::claim::MaybeWebhook,
}

/// A delivery fan-out handed over, as the worker needs it but for its event (which ingest has in memory).
pub(crate) struct Handed {
    pub(crate) id: String,
    pub(crate) event_id: String,
    pub(crate) max_attempts: i32,
    pub(crate) trace_parent: Option<String>,
    pub(crate) webhook: crate::claim::WebhookRow,
}

/// Where a replay's settings come from: the webhook joined as `w` (its settings now), or columns the caller's `d`
/// rows already carry from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaySettings {
    FromWebhookW,
    CarriedByD,
}

/// Pushes the write of a replay of every row `d` the caller's FROM clause, pushed next, yields: a new pending
/// delivery of the same event to the same webhook, due now, linked to `d` by `replay_of`, its attempts linking to
/// `trace`. Its id carries its event's day, as every delivery's does (migration 0023), so it sits in that day's
/// partition and leaves with it. A replay is a delivery created now, so it takes the webhook's `max_attempts` and payload filter as they
/// are now (`settings` says where they are). Which rows are replayed is the caller's (`crate::replay`); what a
/// replay is, is the queue's.
pub fn push_replays(q: &mut sqlx::QueryBuilder<sqlx::Postgres>, settings: ReplaySettings, trace: Option<String>) {
    q.push(
        "INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status,
                                 max_attempts, next_attempt_at, replay_of, trace_parent, include_transcript,
                                 include_metrics, event_received_at)
         SELECT courier_id_at('dlv_', COALESCE(",
    );
    q.push(REPLAYED_EVENT_DAY);
    q.push(
        ", clock_timestamp())),
                d.tenant_id, d.environment, d.event_id, d.webhook_id, d.event_type, d.call_id, ",
    );
    q.push_bind(DeliveryStatus::Pending);
    q.push(match settings {
        ReplaySettings::FromWebhookW => ", w.max_attempts, now(), d.id, ",
        ReplaySettings::CarriedByD => ", d.max_attempts, now(), d.id, ",
    });
    q.push_bind(trace);
    q.push(match settings {
        ReplaySettings::FromWebhookW => ", w.include_transcript, w.include_metrics, ",
        ReplaySettings::CarriedByD => ", d.include_transcript, d.include_metrics, ",
    });
    q.push(REPLAYED_EVENT_DAY).push(" ");
}

/// The day of the replayed delivery `d`'s event, from its key: `d`'s own `event_received_at` is NULL on deliveries
/// finished before migration 0029, and the callers' `d` may not carry it. The callers hold the event (`EVENT_HELD`)
/// in the same statement, so the key is there; were it not, the replay's `event_received_at` would be NULL and the
/// queue's check refuses it rather than keep a delivery no claim can find.
const REPLAYED_EVENT_DAY: &str = "(SELECT k.received_at FROM event_keys k
                                    WHERE k.tenant_id = d.tenant_id AND k.environment = d.environment
                                      AND k.id = d.event_id)";

//! Handover: under `courier serve`, ingest leases new deliveries to the worker of its own process in the very
//! transaction that stores them, and hands them over in memory once it commits.
//!
//! A delivery handed over costs no claim statement (no second write of its row and its indexes), no `NOTIFY` and
//! no wake-up: at a light load those are most of what a lone event costs. Nothing is traded for it: the delivery is
//! committed `delivering` with a lease exactly as a claim would leave it, so if this process dies before the
//! attempt is recorded, the lease runs out and any worker claims it again, as after any crash.
//!
//! The worker lends ingest a budget of credits; each handed-over delivery holds one until its attempt ends, so
//! ingest never leases more than the worker has room for. What finds no credit, waits for an earlier delivery of
//! its call, or goes to a rate-limited webhook is enqueued `pending` and claimed as before.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::{ClaimedDelivery, Clock};

/// One delivery leased by ingest, with the credit it holds until its attempt ends.
pub struct Handed {
    pub delivery: ClaimedDelivery,
    pub credit: OwnedSemaphorePermit,
}

/// Ingest's side: reserve credits, lease that many deliveries, hand them over after the commit. Cheap to clone.
#[derive(Clone)]
pub struct Handover {
    credits: Arc<Semaphore>,
    deliveries: mpsc::UnboundedSender<Handed>,
    lease: Duration,
    clock: Clock,
    handed: Arc<AtomicU64>,
}

/// The worker's side of a [`Handover`].
pub type Receiver = mpsc::UnboundedReceiver<Handed>;

/// Credits ingest holds for one transaction; those it does not use go back when dropped.
pub struct Reserved {
    pub(crate) credits: Vec<OwnedSemaphorePermit>,
    /// How many of them the transaction's fan-outs have leased so far.
    pub(crate) leased: usize,
    pub(crate) lease: Duration,
    pub(crate) skew: Duration,
}

impl Handover {
    /// A handover of at most `budget` deliveries at once, leased for `lease` on `clock` (the worker's).
    pub fn new(budget: usize, lease: Duration, clock: Clock) -> (Self, Receiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handed = Arc::new(AtomicU64::new(0));
        (Self { credits: Arc::new(Semaphore::new(budget)), deliveries: tx, lease, clock, handed }, rx)
    }

    /// Up to `wanted` credits, as many as are free now (never waits); `None` when the worker is gone.
    pub fn reserve(&self, wanted: usize) -> Option<Reserved> {
        if self.deliveries.is_closed() {
            return None;
        }
        let credits: Vec<_> = (0..wanted).map_while(|_| self.credits.clone().try_acquire_owned().ok()).collect();
        Some(Reserved { credits, leased: 0, lease: self.lease, skew: self.clock.skew() })
    }

    /// Hands committed deliveries to the worker, each with one of `reserved`'s credits. Should the worker have
    /// stopped, they stay leased and are claimed again when their lease runs out.
    pub fn hand(&self, deliveries: Vec<ClaimedDelivery>, reserved: Reserved) {
        let count = deliveries.len() as u64;
        for (delivery, credit) in deliveries.into_iter().zip(reserved.credits) {
            if self.deliveries.send(Handed { delivery, credit }).is_err() {
                tracing::warn!("the worker stopped before a handed-over delivery reached it; its lease brings it back");
                return;
            }
        }
        self.handed.fetch_add(count, Ordering::Relaxed);
    }

    /// How many deliveries have been handed over so far.
    pub fn handed(&self) -> u64 {
        self.handed.load(Ordering::Relaxed)
    }
}

impl Reserved {
    /// How many more deliveries this transaction may lease.
    pub fn count(&self) -> usize {
        self.credits.len() - self.leased
    }
}

/// The deliveries a fan-out just leased, as the worker needs them: their rows and webhooks from the database (in
/// the transaction that inserted them), their events from memory.
pub(crate) async fn load(
    conn: &mut sqlx::PgConnection,
    leased: &[(String, String)],
    events: &std::collections::HashMap<&str, &courier_core::Event>,
) -> crate::Result<Vec<ClaimedDelivery>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: String,
        event_id: String,
        attempt_count: i32,
        max_attempts: i32,
        trace_parent: Option<String>,
        ordered: bool,
        #[sqlx(flatten)]
        webhook: crate::claim::WebhookRow,
    }
    if leased.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = leased.iter().map(|(_, id)| id.as_str()).collect();
    let rows: Vec<Row> = sqlx::query_as(concat!(
        "SELECT d.id, d.event_id, d.attempt_count, d.max_attempts, d.trace_parent,
                d.call_seq IS NOT NULL AS ordered, ",
        crate::claim::webhook_columns!(),
        " FROM deliveries_live d JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = ANY ($1) AND d.status = $2"
    ))
    .bind(&ids)
    .bind(crate::DeliveryStatus::Delivering)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .filter_map(|row| events.get(row.event_id.as_str()).map(|event| (row, (*event).clone())))
        .map(|(row, event)| {
            let row_name = format!("delivery {}", row.id);
            Ok(ClaimedDelivery {
                id: courier_core::DeliveryId::parse(&row.id).map_err(crate::corrupt(&row_name, "id"))?,
                attempt: u32::try_from(row.attempt_count).map_err(crate::corrupt(&row_name, "attempt_count"))?,
                max_attempts: u32::try_from(row.max_attempts).map_err(crate::corrupt(&row_name, "max_attempts"))?,
                event,
                webhook: row.webhook.parse(&row_name)?,
                trace_parent: row.trace_parent.and_then(|t| t.parse().ok()),
                ordered: row.ordered,
            })
        })
        .collect()
}

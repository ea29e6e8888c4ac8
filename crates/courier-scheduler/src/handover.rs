//! Handover: under `courier serve`, ingest leases new deliveries to the worker of its own process in the very
//! statement that stores them, and hands them over in memory once it commits.
//!
//! A delivery handed over costs no claim statement, no `NOTIFY` and no wake-up, and it is written once: the ingest
//! statement stores one journal row per fan-out (its deliveries as arrays, with their lease), and the first attempt
//! writes each delivery in its final state (`queue::journal`). Nothing is traded for it: if this process dies before
//! an attempt is recorded, the lease runs out and any worker's sweep writes the deliveries the journal holds that
//! are still missing as a claim would have left them, and they are claimed again, as after any crash. Until its
//! first attempt ends (or its lease), such a delivery is not in `deliveries`, so the log does not show it yet.
//!
//! The worker lends ingest a budget of credits; each handed-over delivery holds one until its attempt ends, so
//! ingest never leases more than the worker has room for. Nor does it lease to a webhook or tenant the worker holds
//! its share of ([`Full`]): the worker would only hand those back. What finds no credit or no room, waits for an
//! earlier delivery of its call, or goes to a rate-limited webhook is enqueued `pending` and claimed as before.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use courier_core::{TenantId, WebhookId};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::{ClaimedDelivery, Clock};

/// What the worker has no room for at the moment: the webhooks and tenants at their share of it.
#[derive(Debug, Clone, Default)]
pub struct Full {
    pub webhooks: Vec<WebhookId>,
    pub tenants: Vec<TenantId>,
}

/// Asks the worker what it has no room for; called once per ingest commit.
pub type Room = Arc<dyn Fn() -> Full + Send + Sync>;

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
    settled: Arc<std::sync::Mutex<Vec<i64>>>,
    room: Option<Room>,
}

/// The worker's side of a [`Handover`].
pub type Receiver = mpsc::UnboundedReceiver<Handed>;

/// Credits ingest holds for one commit; those it does not use go back when dropped.
pub struct Reserved {
    pub(crate) credits: Vec<OwnedSemaphorePermit>,
    /// How many of them the commit's fan-outs have leased so far.
    pub(crate) leased: usize,
    pub(crate) lease: Duration,
    pub(crate) skew: Duration,
    pub(crate) settled: Arc<std::sync::Mutex<Vec<i64>>>,
    /// What the worker had no room for when the credits were taken.
    pub(crate) full: Full,
}

impl Handover {
    /// A handover of at most `budget` deliveries at once, leased for `lease` on `clock` (the worker's).
    pub fn new(budget: usize, lease: Duration, clock: Clock) -> (Self, Receiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handed = Arc::new(AtomicU64::new(0));
        let settled = Arc::default();
        let credits = Arc::new(Semaphore::new(budget));
        (Self { credits, deliveries: tx, lease, clock, handed, settled, room: None }, rx)
    }

    /// The same handover, leasing nothing to what `room` says the worker has no room for. Without it, the worker
    /// hands back what it cannot take: a write of each such delivery, and its release, for nothing (4.5 % of the
    /// batch benchmark's deliveries, to its one webhook at its share).
    pub fn with_room(self, room: Room) -> Self {
        Self { room: Some(room), ..self }
    }

    /// Up to `wanted` credits, as many as are free now (never waits); `None` when the worker is gone.
    pub fn reserve(&self, wanted: usize) -> Option<Reserved> {
        if self.deliveries.is_closed() {
            return None;
        }
        let credits: Vec<_> = (0..wanted).map_while(|_| self.credits.clone().try_acquire_owned().ok()).collect();
        let settled = self.settled.clone();
        let full = match &self.room {
            Some(room) if !credits.is_empty() => room(),
            _ => Full::default(),
        };
        Some(Reserved { credits, leased: 0, lease: self.lease, skew: self.clock.skew(), settled, full })
    }

    /// Hands committed deliveries to the worker, each with one of `reserved`'s credits. Should the worker have
    /// stopped, their journal row brings them back when their lease runs out.
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
    /// How many more deliveries this commit may lease.
    pub fn count(&self) -> usize {
        self.credits.len() - self.leased
    }

    /// Whether `tenant`'s deliveries may be leased at all (its share of the worker is not full).
    pub(crate) fn has_room_for(&self, tenant: TenantId) -> bool {
        !self.full.tenants.contains(&tenant)
    }

    /// The webhooks none of whose deliveries may be leased.
    pub(crate) fn full_webhooks(&self) -> Vec<&str> {
        self.full.webhooks.iter().map(WebhookId::as_str).collect()
    }
}

/// A handed-over delivery's claim on the journal row that stands for it until it is written (`queue::journal`):
/// every delivery of one fan-out shares one. The last of them to be written marks the row settled, and the next
/// record deletes it; a row never settled (a crash, an attempt the recorder could not keep) waits for its lease to
/// run out, when any worker's sweep writes what it holds that is still missing.
#[derive(Debug, Clone)]
pub struct Ticket(Arc<Journal>);

#[derive(Debug)]
struct Journal {
    id: i64,
    /// Its deliveries not written yet.
    unwritten: AtomicUsize,
    /// Journal rows whose deliveries are all written, for the next record to delete; shared by the handover.
    settled: Arc<std::sync::Mutex<Vec<i64>>>,
}

impl Ticket {
    pub(crate) fn new(id: i64, deliveries: usize, settled: Arc<std::sync::Mutex<Vec<i64>>>) -> Self {
        Self(Arc::new(Journal { id, unwritten: AtomicUsize::new(deliveries), settled }))
    }

    /// The journal row's id.
    pub fn journal(&self) -> i64 {
        self.0.id
    }

    /// One of its deliveries was written, in a transaction that committed.
    pub(crate) fn written(&self) {
        if self.0.unwritten.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.settled.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(self.0.id);
        }
    }

    /// Journal rows taken for deleting whose transaction did not commit: settled still.
    pub(crate) fn give_back(&self, ids: Vec<i64>) {
        self.0.settled.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(ids);
    }

    /// The journal rows settled so far, taken for deleting.
    pub(crate) fn take_settled(&self) -> Vec<i64> {
        std::mem::take(&mut *self.0.settled.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// Journal rows whose deliveries are all written, taken for a batch to delete; given back unless it commits.
pub(crate) struct Settled<'a> {
    pub(crate) ids: Vec<i64>,
    from: Option<&'a Ticket>,
}

impl<'a> Settled<'a> {
    /// From any of `tickets` (they share the handover's list).
    pub(crate) fn take(mut tickets: impl Iterator<Item = &'a Ticket>) -> Self {
        let from = tickets.next();
        Self { ids: from.map(Ticket::take_settled).unwrap_or_default(), from }
    }

    /// The batch committed: they are gone.
    pub(crate) fn deleted(mut self) {
        self.ids.clear();
    }
}

impl Drop for Settled<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.from
            && !self.ids.is_empty()
        {
            ticket.give_back(std::mem::take(&mut self.ids));
        }
    }
}

/// The deliveries a fan-out just handed over (journal row `journal`) as the worker takes them, their events from
/// memory, each with its share of the journal row.
pub(crate) fn claimed(
    (journal, handed): (i64, Vec<crate::queue::enqueue::Handed>),
    reserved: &Reserved,
    events: &std::collections::HashMap<&str, &courier_core::Event>,
) -> crate::Result<Vec<ClaimedDelivery>> {
    let ticket = Ticket::new(journal, handed.len(), reserved.settled.clone());
    handed
        .into_iter()
        .filter_map(|row| events.get(row.event_id.as_str()).map(|event| (row, (*event).clone())))
        .map(|(row, event)| {
            let row_name = format!("delivery {}", row.id);
            Ok(ClaimedDelivery {
                id: courier_core::DeliveryId::parse(&row.id).map_err(crate::corrupt(&row_name, "id"))?,
                attempt: 1,
                max_attempts: u32::try_from(row.max_attempts).map_err(crate::corrupt(&row_name, "max_attempts"))?,
                event,
                webhook: row.webhook.parse(&row_name)?,
                trace_parent: row.trace_parent.and_then(|t| t.parse().ok()),
                ordered: false,
                handover: Some(ticket.clone()),
            })
        })
        .collect()
}

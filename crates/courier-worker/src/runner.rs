//! The delivery loop: claim within this process's shares, run each attempt as a task, hand finished attempts to
//! the recorder, wait for new work, and stop gracefully. Production and the tests run this same loop; tests step
//! its [`Clock`] instead of sleeping through retry delays.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use courier_core::{MasterKey, WebhookId};
use courier_scheduler::handover::{self, Handed, Handover};
use courier_scheduler::wake::Notifier;
use courier_scheduler::wake::{LocalWake, Wakeup};
use courier_scheduler::{AttemptRecord, ClaimedDelivery, Clock, Skip, claim, disabling, lease, ordering, rate};
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::client::{self, ClientConfig};
use crate::holdings::{Arrival, Holdings, Saturated};
use crate::ssrf::TargetPolicy;
use crate::{Result, WorkerConfig};

/// How long a finished attempt may wait for room in the recorder's queue before it is dropped (logged): the
/// recorder is stuck on an unreachable database, and the delivery's lease will bring it back.
const RECORD_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// At shutdown, how long the recorder may take to write what it holds before the rest is left to the leases.
const RECORD_FLUSH_WAIT: Duration = Duration::from_secs(5);

/// How often a running worker sweeps: fails deliveries whose lease ran out after their last allowed attempt, and
/// disables webhooks that kept failing. Also whenever the clock is stepped.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// A delivery worker. Cheap to clone; clones share the HTTP connection pool.
#[derive(Clone)]
pub struct Worker {
    pub(crate) pool: PgPool,
    pub(crate) key: MasterKey,
    pub(crate) clock: Clock,
    pub(crate) http: client::Clients,
    /// Broker connections (Redis, NATS), pooled per destination.
    pub(crate) brokers: crate::brokers::Brokers,
    pub(crate) policy: Arc<TargetPolicy>,
    pub(crate) config: WorkerConfig,
    /// Wake-ups from ingest in this same process (`courier serve`), which come before their `NOTIFY` does.
    pub(crate) local: LocalWake,
    /// Rate-limited webhooks whose backlog waits in line, and when their line ends: one pacing task each.
    pub(crate) pacers: Arc<std::sync::Mutex<HashMap<WebhookId, tokio::time::Instant>>>,
    /// Deliveries ingest in this same process leased to this worker (`courier serve`), once [`Worker::handover`]
    /// was asked for; taken by [`Worker::run`].
    pub(crate) handed: Arc<std::sync::Mutex<Option<handover::Receiver>>>,
    pub(crate) holdings: Holdings,
}

/// What this process has claimed and not yet finished (the shares it holds are the worker's `holdings`).
struct InFlight {
    tasks: JoinSet<()>,
    /// Which delivery each task attempts, so shutdown can release those it aborts.
    claimed: HashMap<tokio::task::Id, lease::Leased>,
    records: mpsc::Sender<AttemptRecord>,
    /// Where ingest's handed-over deliveries arrive, under `courier serve`.
    handed: Option<handover::Receiver>,
}

/// Why the loop woke up.
enum Woke {
    Shutdown,
    /// A notification, the poll interval, or a stepped clock: look for due work.
    Look {
        sweep: bool,
    },
    /// An attempt finished.
    Finished,
    /// Ingest handed deliveries over.
    Handed(Box<Handed>),
}

impl Worker {
    pub fn new(pool: PgPool, key: MasterKey, config: WorkerConfig) -> Result<Self> {
        let policy = Arc::new(TargetPolicy::new(config.allowed_targets.clone()));
        let http = client::build(&ClientConfig {
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
            policy: policy.clone(),
        })?;
        let brokers = crate::brokers::Brokers::new(policy.clone(), config.connect_timeout, config.timeout);
        Ok(Self {
            pool,
            key,
            clock: Clock::database(),
            http,
            brokers,
            policy,
            local: LocalWake::default(),
            pacers: Arc::default(),
            handed: Arc::default(),
            holdings: Holdings::new(config.shares()),
            config,
        })
    }

    /// Lets ingest in this process lease new deliveries to this worker and hand them over in memory
    /// (`courier_scheduler::handover`): up to half its concurrency at once, on its clock and lease. Ask before
    /// [`Worker::run`]; a second call replaces the first handover.
    pub fn handover(&self) -> Handover {
        let budget = (self.config.concurrency / 2).max(1);
        let (handover, receiver) = Handover::new(budget, self.config.lease(), self.clock.clone());
        *self.handed.lock().unwrap_or_else(|e| e.into_inner()) = Some(receiver);
        handover.with_room(self.holdings.room())
    }

    /// The same worker, also woken directly by `local` (hand the same one to the API of this process).
    pub fn with_local_wake(self, local: LocalWake) -> Self {
        Self { local, ..self }
    }

    /// The same worker, handing relay deliveries to the `courier listen` sessions of this process's API.
    pub fn with_relays(self, relays: courier_scheduler::relay::Relays) -> Self {
        Self { brokers: self.brokers.with_relays(relays), ..self }
    }

    /// The same worker on another clock (tests step theirs).
    pub fn with_clock(self, clock: Clock) -> Self {
        Self { clock, ..self }
    }

    /// Runs until `shutdown` is cancelled: then stops claiming, lets in-flight attempts finish within the grace
    /// period, records them, releases the rest and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let mut wakeup = Wakeup::connect(&self.pool).await?;
        let (records, queue) = mpsc::channel::<AttemptRecord>(self.config.concurrency * 2);
        let workers = Notifier::spawn(self.pool.clone());
        let recorder =
            tokio::spawn(crate::recorder::record_batches(self.pool.clone(), self.clock.clone(), workers, queue));
        let mut flight = InFlight {
            tasks: JoinSet::new(),
            claimed: HashMap::new(),
            records,
            handed: self.handed.lock().unwrap_or_else(|e| e.into_inner()).take(),
        };
        self.deliver(&shutdown, &mut wakeup, &mut flight).await;
        self.stop(flight, recorder).await
    }

    /// The loop proper: claim while there is room and reason to, then wait for something to change.
    async fn deliver(&self, shutdown: &CancellationToken, wakeup: &mut Wakeup, flight: &mut InFlight) {
        let mut last_sweep = tokio::time::Instant::now() - SWEEP_EVERY;
        // Why the last claim came back short: what it had to skip. While all of that stays at its share, a finished
        // attempt is no reason to claim again (it would only rescan the same rows).
        let mut paused: Option<Saturated> = None;
        let mut should_claim = true;
        while !shutdown.is_cancelled() {
            let free = self.config.concurrency.saturating_sub(flight.tasks.len()).min(self.config.per_webhook);
            if should_claim && free > 0 {
                match self.claim_into(flight, free).await {
                    None => continue, // A full batch: more may be due right now.
                    Some(skipped) => paused = Some(skipped),
                }
            } else if free == 0 {
                paused = None;
            }
            flight.reap();
            match self.wait(shutdown, wakeup, flight, last_sweep).await {
                Woke::Shutdown => break,
                Woke::Look { sweep } => {
                    should_claim = true;
                    if sweep {
                        last_sweep = tokio::time::Instant::now();
                        if let Err(err) = self.sweep().await {
                            tracing::warn!(error = %err, "sweeping exhausted leases and failing webhooks failed");
                        }
                    }
                }
                Woke::Handed(first) => {
                    let mut batch = vec![*first];
                    while let Some(more) = flight.handed.as_mut().and_then(|rx| rx.try_recv().ok()) {
                        batch.push(more);
                    }
                    let batch = batch.into_iter().map(|h| (h.delivery, Some(h.credit))).collect();
                    self.dispatch(batch, flight).await;
                }
                Woke::Finished => {
                    should_claim = match &paused {
                        // The slots were full: a finished attempt frees one.
                        None => true,
                        // Nothing else was due: wait for a notification or the poll.
                        Some(skipped) if skipped.is_empty() => false,
                        // Claim again once something skipped has room.
                        Some(skipped) => self.holdings.eased(skipped),
                    };
                }
            }
        }
    }

    /// Claims up to `free` deliveries and starts them. `None` when the batch came back full; otherwise what the
    /// claim had to skip (nothing, when nothing more was due).
    async fn claim_into(&self, flight: &mut InFlight, free: usize) -> Option<Saturated> {
        let skip = self.holdings.saturated();
        let limits = Skip { webhooks: &skip.webhooks, tenants: &skip.tenants, retries: skip.retries };
        match claim(&self.pool, &self.clock, free as u32, self.config.lease(), limits).await {
            Ok(batch) => {
                let full = batch.len() == free;
                self.dispatch(batch.into_iter().map(|d| (d, None)).collect(), flight).await;
                if full { None } else { Some(skip) }
            }
            Err(err) => {
                tracing::error!(error = %err, "claiming deliveries failed; retrying after the poll interval");
                Some(Saturated::default())
            }
        }
    }

    /// Waits for new work, a finished attempt, the poll interval, a stepped clock or shutdown.
    async fn wait(
        &self,
        shutdown: &CancellationToken,
        wakeup: &mut Wakeup,
        flight: &mut InFlight,
        last_sweep: tokio::time::Instant,
    ) -> Woke {
        let room = flight.tasks.len() < self.config.concurrency;
        tokio::select! {
            () = shutdown.cancelled() => Woke::Shutdown,
            // Expired leases on spent attempt budgets only come from crashed workers: sweep them now and then, not
            // on every wake-up.
            () = wakeup.wait(self.config.poll_interval, Some(&self.local)), if room => {
                Woke::Look { sweep: last_sweep.elapsed() >= SWEEP_EVERY }
            }
            () = self.local.woken(), if room => Woke::Look { sweep: last_sweep.elapsed() >= SWEEP_EVERY },
            () = self.clock.advanced() => Woke::Look { sweep: true },
            Some(done) = flight.tasks.join_next_with_id(), if !flight.tasks.is_empty() => {
                flight.forget(done);
                Woke::Finished
            }
            // Already leased and within the handover's budget: taken whatever the room.
            Some(handed) = next_handed(&mut flight.handed) => Woke::Handed(Box::new(handed)),
        }
    }

    /// Shutdown: no more claims; in-flight attempts get the grace period, then are released unrecorded.
    async fn stop(&self, mut flight: InFlight, recorder: tokio::task::JoinHandle<()>) -> Result<()> {
        let deadline = tokio::time::sleep(self.config.shutdown_grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                done = flight.tasks.join_next_with_id() => match done {
                    Some(done) => flight.forget(done),
                    None => break,
                },
                () = &mut deadline => {
                    flight.tasks.abort_all();
                    while let Some(done) = flight.tasks.join_next_with_id().await {
                        flight.forget(done);
                    }
                    break;
                }
            }
        }
        drop(flight.records);
        // A recorder stuck on an unreachable database must not hold shutdown: what it could not write comes back
        // when the leases run out.
        if tokio::time::timeout(RECORD_FLUSH_WAIT, recorder).await.is_err() {
            tracing::error!("recording the last attempts did not finish in time; their leases will bring them back");
        }
        let mut unfinished: Vec<_> = flight.claimed.into_values().collect();
        // Handed over but never started: back to the queue now, not when their leases run out.
        if let Some(mut handed) = flight.handed.take() {
            handed.close();
            while let Ok(h) = handed.try_recv() {
                unfinished.push(h.delivery.leased());
            }
        }
        let release = lease::release(&self.pool, &self.clock, &unfinished, Duration::ZERO);
        let released = match tokio::time::timeout(RECORD_FLUSH_WAIT, release).await {
            Ok(released) => released?,
            Err(_) => {
                tracing::error!(count = unfinished.len(), "releasing deliveries timed out; their leases will expire");
                0
            }
        };
        tracing::info!(released, "worker stopped");
        Ok(())
    }

    /// Housekeeping that needs no hurry: queue the handed-over deliveries a crashed process never recorded, fail
    /// deliveries a crashed worker left on their last attempt, let go
    /// ordered deliveries whose chain head ended unseen (see `courier_scheduler::ordering`), and disable webhooks
    /// that kept failing.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn sweep(&self) -> Result<()> {
        // First, so that deliveries a crashed process had handed over and never recorded are queued, leases run out,
        // and those on their last attempt fail in the next statement.
        if let Err(err) = courier_scheduler::queue::journal::recover(&self.pool, &self.clock).await {
            tracing::warn!(error = %err, "writing back handed-over deliveries whose lease ran out failed");
        }
        lease::fail_exhausted_leases(&self.pool, &self.clock).await?;
        ordering::promote_stranded(&self.pool, &self.clock).await?;
        rate::forget_old_windows(&self.pool).await?;
        if let Some(rule) = self.config.auto_disable {
            disabling::disable_failing(&self.pool, &self.clock, rule.after, rule.min_failures).await?;
        }
        Ok(())
    }

    /// Starts a task per claimed delivery that fits the shares; hands back the ones that do not. A handed-over
    /// delivery comes with its handover credit, which its task holds until it ends.
    #[tracing::instrument(level = "debug", skip_all, fields(claimed = batch.len()))]
    async fn dispatch(&self, batch: Vec<(ClaimedDelivery, Option<OwnedSemaphorePermit>)>, flight: &mut InFlight) {
        let mut over_cap = Vec::new();
        for (delivery, credit) in batch {
            // Claims stop short of every share; one batch can still overshoot a share by its own size.
            let arrival = credit.as_ref().map_or(Arrival::Claimed { retry: delivery.attempt > 1 }, |_| Arrival::Handed);
            let Some(held) = self.holdings.take(&delivery.webhook.id, delivery.event.tenant_id, arrival) else {
                over_cap.push(delivery.leased());
                continue;
            };
            let key = delivery.leased();
            let task = self.clone().run_one(delivery, held, flight.records.clone());
            let handle = flight.tasks.spawn(async move {
                task.await;
                drop(credit);
            });
            flight.claimed.insert(handle.id(), key);
        }
        // Claimed past a share in the same batch: hand back, untouched, for a moment.
        if let Err(err) = lease::release(&self.pool, &self.clock, &over_cap, Duration::from_millis(50)).await {
            tracing::error!(error = %err, "releasing over-cap deliveries failed; their leases will expire");
        }
    }

    /// One claimed delivery's task: wait for its webhook's permit, attempt it, hand the record to the recorder.
    async fn run_one(
        self,
        delivery: ClaimedDelivery,
        held: crate::holdings::Held,
        records: mpsc::Sender<AttemptRecord>,
    ) {
        let claimed_at = tokio::time::Instant::now();
        // Waiting here holds the lease but no connection, normally for less than one request timeout. Should it ever
        // take half the lease, the delivery goes back unattempted rather than risk a second claim.
        let permit = held.permits.clone().acquire_owned().await;
        if claimed_at.elapsed() > self.config.lease() / 2 {
            let back = [delivery.leased()];
            if let Err(err) = lease::release(&self.pool, &self.clock, &back, Duration::ZERO).await {
                tracing::warn!(error = %err, "releasing a delivery that waited too long failed; its lease will expire");
            }
            return;
        }
        // A rate-limited webhook's slot is taken right before sending, so slots and requests keep the same pace.
        if let Some(per_second) = delivery.webhook.rate_limit
            && let Some(wait) = self.over_rate(&delivery, per_second).await
        {
            self.defer(&delivery, per_second, wait).await;
            return;
        }
        let _in_flight = crate::metrics::InFlightGuard::new();
        let ids = (delivery.id.clone(), delivery.attempt);
        if let Some(record) = self.attempt(delivery).await {
            drop(permit);
            // The slot is held until the recorder takes the attempt, but never for long: a recorder that cannot keep
            // up (its database is gone) costs this attempt's record, not the slot.
            if tokio::time::timeout(RECORD_QUEUE_WAIT, records.send(record)).await.is_err() {
                crate::metrics::record_dropped();
                tracing::error!(delivery.id = %ids.0, attempt = ids.1,
                    "the recorder is not keeping up; this attempt goes unrecorded and its lease will bring it back");
            }
        }
        drop(held);
    }
}

/// The next handed-over delivery; never, without a handover (or once ingest is gone).
async fn next_handed(handed: &mut Option<handover::Receiver>) -> Option<Handed> {
    match handed {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl InFlight {
    /// Forgets every task that already finished.
    fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            self.forget(done);
        }
    }

    fn forget(&mut self, done: std::result::Result<(tokio::task::Id, ()), JoinError>) {
        let id = match done {
            Ok((id, ())) => id,
            // An aborted attempt stays claimed so shutdown releases it.
            Err(err) if err.is_cancelled() => return,
            Err(err) => err.id(),
        };
        self.claimed.remove(&id);
    }
}

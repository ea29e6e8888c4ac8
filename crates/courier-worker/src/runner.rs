//! Running attempts: a claim loop with bounded concurrency, per-webhook, per-tenant and retry shares, batched
//! recording, wake-ups and graceful shutdown; and `step`, which tests drive by hand.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use courier_core::{RetryPolicy, outcome};
use courier_scheduler::wake::Wakeup;
// The master key comes through the scheduler, which owns the edge to the store.
use courier_scheduler::{AttemptRecord, ClaimedDelivery, MasterKey, Skip, claim, lifecycle};
use ipnet::IpNet;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::client::{self, ClientConfig};
use crate::holdings::{Holdings, Saturated, Shares};
use crate::ssrf::TargetPolicy;
use crate::{Result, stages};

/// How one worker process delivers.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub retry: RetryPolicy,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub allowed_targets: Vec<IpNet>,
    /// Deliveries in flight in this process.
    pub concurrency: usize,
    /// Deliveries in flight to one webhook in this process, so one slow endpoint cannot take every slot.
    pub per_webhook: usize,
    /// Deliveries one tenant may hold in this process, so a tenant with several slow endpoints cannot take every
    /// slot either. [`WorkerConfig::default_per_tenant`] leaves one webhook's cap for everyone else.
    pub per_tenant: usize,
    /// How often an idle worker looks for due work when no notification came (retries become due silently).
    pub poll_interval: Duration,
    /// How long in-flight attempts may run on after shutdown is asked for before they are released.
    pub shutdown_grace: Duration,
    /// Disable a webhook whose deliveries have all failed for good for this long, once at least `min_failures`
    /// have; `None` never does.
    pub auto_disable: Option<AutoDisable>,
    /// How long a claim holds a delivery before any worker may claim it again.
    /// At least twice the request timeout, so a live worker never loses a lease mid-request.
    pub lease: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct AutoDisable {
    pub after: Duration,
    pub min_failures: u32,
}

impl WorkerConfig {
    /// The lease the design asks for: twice the whole request timeout plus slack.
    pub fn default_lease(timeout: Duration) -> Duration {
        timeout * 2 + Duration::from_secs(5)
    }

    /// The default tenant share: all of the process but one webhook's cap, which another tenant can always use.
    pub fn default_per_tenant(concurrency: usize, per_webhook: usize) -> usize {
        concurrency.saturating_sub(per_webhook).max(per_webhook).max(1)
    }

    fn lease(&self) -> Duration {
        self.lease.max(self.timeout * 2)
    }

    fn shares(&self) -> Shares {
        Shares {
            per_webhook: self.per_webhook.max(1),
            per_tenant: self.per_tenant.max(1),
            retries: (self.concurrency * RETRY_SHARE_PERCENT / 100).max(1),
        }
    }
}

/// Retries may hold at most this share of a process's slots; the rest is kept for first attempts, so a backlog of
/// failing retries never holds back fresh events.
const RETRY_SHARE_PERCENT: usize = 75;

/// How long a finished attempt may wait for room in the recorder's queue before it is dropped (logged): the
/// recorder is stuck on an unreachable database, and the delivery's lease will bring it back.
const RECORD_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// At shutdown, how long the recorder may take to write what it holds before the rest is left to the leases.
const RECORD_FLUSH_WAIT: Duration = Duration::from_secs(5);

/// A delivery worker. Cheap to clone; clones share the HTTP connection pool.
#[derive(Clone)]
pub struct Worker {
    pool: PgPool,
    key: MasterKey,
    http: reqwest::Client,
    policy: Arc<TargetPolicy>,
    config: WorkerConfig,
}

/// How often a running worker sweeps: fails deliveries whose lease ran out after their last allowed attempt, and
/// disables webhooks that kept failing.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

impl Worker {
    pub fn new(pool: PgPool, key: MasterKey, config: WorkerConfig) -> Result<Self> {
        let policy = Arc::new(TargetPolicy::new(config.allowed_targets.clone()));
        let http = client::build(&ClientConfig {
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
            policy: policy.clone(),
        })?;
        Ok(Self { pool, key, http, policy, config })
    }

    /// Claims one batch (up to the concurrency), delivers it and records it; returns how many were claimed.
    /// Tests step a worker with this until the queue is empty instead of sleeping.
    pub async fn step(&self) -> Result<usize> {
        self.sweep().await?;
        let claimed = claim(&self.pool, self.config.concurrency as u32, self.config.lease(), Skip::default()).await?;
        let n = claimed.len();
        let mut set = JoinSet::new();
        for delivery in claimed {
            let worker = self.clone();
            set.spawn(async move { worker.attempt(delivery).await });
        }
        let mut records = Vec::with_capacity(n);
        while let Some(done) = set.join_next().await {
            if let Ok(Some(record)) = done {
                records.push(record);
            }
        }
        let recorded = courier_scheduler::record(&self.pool, &records).await?;
        crate::telemetry::recorded(&recorded);
        Ok(n)
    }

    /// Runs until `shutdown` is cancelled: then stops claiming, lets in-flight attempts finish within the grace
    /// period, records them, releases the rest and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let mut wakeup = Wakeup::connect(&self.pool).await?;
        let (records_tx, records_rx) = mpsc::channel::<AttemptRecord>(self.config.concurrency * 2);
        let recorder = tokio::spawn(record_batches(self.pool.clone(), records_rx));
        let holdings = Holdings::new(self.config.shares());
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut claimed_now: HashMap<tokio::task::Id, (courier_core::DeliveryId, u32)> = HashMap::new();
        let mut last_sweep = tokio::time::Instant::now() - SWEEP_EVERY;

        // Why the last claim came back short: what it had to skip. While all of that stays at its share, a finished
        // attempt is no reason to claim again (it would only rescan the same rows).
        let mut paused: Option<Saturated> = None;
        let mut should_claim = true;
        while !shutdown.is_cancelled() {
            let free = self.config.concurrency.saturating_sub(tasks.len()).min(self.config.per_webhook);
            if should_claim && free > 0 {
                let skip = holdings.saturated();
                let limits = Skip { webhooks: &skip.webhooks, tenants: &skip.tenants, retries: skip.retries };
                match claim(&self.pool, free as u32, self.config.lease(), limits).await {
                    Ok(batch) => {
                        let got = batch.len();
                        self.dispatch(batch, &holdings, &mut tasks, &mut claimed_now, &records_tx).await;
                        if got == free {
                            continue; // More may be due right now.
                        }
                        paused = Some(skip);
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "claiming deliveries failed; retrying after the poll interval");
                        paused = Some(Saturated::default());
                    }
                }
            } else if free == 0 {
                paused = None;
            }
            while let Some(done) = tasks.try_join_next_with_id() {
                forget(&mut claimed_now, done);
            }
            // Wait for new work, a finished attempt, the poll interval or shutdown.
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = wakeup.wait(self.config.poll_interval), if tasks.len() < self.config.concurrency => {
                    should_claim = true;
                    // Expired leases on spent attempt budgets only come from crashed workers: sweep them now and
                    // then, not on every wake-up.
                    if last_sweep.elapsed() >= SWEEP_EVERY {
                        last_sweep = tokio::time::Instant::now();
                        if let Err(err) = self.sweep().await {
                            tracing::warn!(error = %err, "sweeping exhausted leases and failing webhooks failed");
                        }
                    }
                }
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    forget(&mut claimed_now, done);
                    should_claim = match &paused {
                        // The slots were full: a finished attempt frees one.
                        None => true,
                        // Nothing else was due: wait for a notification or the poll.
                        Some(skipped) if skipped.is_empty() => false,
                        // Claim again once something skipped has room.
                        Some(skipped) => holdings.eased(skipped),
                    };
                }
            }
        }

        // Shutdown: no more claims; in-flight attempts get the grace period, then are released unrecorded.
        let deadline = tokio::time::sleep(self.config.shutdown_grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                done = tasks.join_next_with_id() => match done {
                    Some(done) => forget(&mut claimed_now, done),
                    None => break,
                },
                () = &mut deadline => {
                    tasks.abort_all();
                    while let Some(done) = tasks.join_next_with_id().await {
                        forget(&mut claimed_now, done);
                    }
                    break;
                }
            }
        }
        drop(records_tx);
        // A recorder stuck on an unreachable database must not hold shutdown: what it could not write comes back
        // when the leases run out.
        if tokio::time::timeout(RECORD_FLUSH_WAIT, recorder).await.is_err() {
            tracing::error!("recording the last attempts did not finish in time; their leases will bring them back");
        }
        let unfinished: Vec<_> = claimed_now.into_values().collect();
        let released = match tokio::time::timeout(
            RECORD_FLUSH_WAIT,
            courier_scheduler::release(&self.pool, &unfinished, Duration::ZERO),
        )
        .await
        {
            Ok(released) => released?,
            Err(_) => {
                tracing::error!(count = unfinished.len(), "releasing deliveries timed out; their leases will expire");
                0
            }
        };
        tracing::info!(released, "worker stopped");
        Ok(())
    }

    /// Housekeeping that needs no hurry: fail deliveries a crashed worker left on their last attempt, and disable
    /// webhooks that kept failing.
    async fn sweep(&self) -> Result<()> {
        claim::fail_exhausted_leases(&self.pool).await?;
        if let Some(rule) = self.config.auto_disable {
            lifecycle::auto_disable_failing(&self.pool, rule.after, rule.min_failures).await?;
        }
        Ok(())
    }

    async fn dispatch(
        &self,
        batch: Vec<ClaimedDelivery>,
        holdings: &Holdings,
        tasks: &mut JoinSet<()>,
        claimed_now: &mut HashMap<tokio::task::Id, (courier_core::DeliveryId, u32)>,
        records: &mpsc::Sender<AttemptRecord>,
    ) {
        let mut over_cap = Vec::new();
        for delivery in batch {
            // Claims stop short of every share; one batch can still overshoot a share by its own size.
            let Some(held) = holdings.take(&delivery.webhook.id, delivery.event.tenant_id, delivery.attempt > 1) else {
                over_cap.push((delivery.id.clone(), delivery.attempt));
                continue;
            };
            let worker = self.clone();
            let records = records.clone();
            let key = (delivery.id.clone(), delivery.attempt);
            let claimed_at = tokio::time::Instant::now();
            let lease = self.config.lease();
            let handle = tasks.spawn(async move {
                // Waiting here holds the lease but no connection, normally for less than one request timeout. Should
                // it ever take half the lease, the delivery goes back unattempted rather than risk a second claim.
                let permit = held.permits.clone().acquire_owned().await;
                if claimed_at.elapsed() > lease / 2 {
                    let back = [(delivery.id.clone(), delivery.attempt)];
                    if let Err(err) = courier_scheduler::release(&worker.pool, &back, Duration::ZERO).await {
                        tracing::warn!(error = %err, "releasing a delivery that waited too long failed; its lease will expire");
                    }
                    return;
                }
                let _in_flight = crate::telemetry::InFlightGuard::new();
                let ids = (delivery.id.clone(), delivery.attempt);
                if let Some(record) = worker.attempt(delivery).await {
                    drop(permit);
                    // The slot is held until the recorder takes the attempt, but never for long: a recorder that
                    // cannot keep up (its database is gone) costs this attempt's record, not the slot.
                    if tokio::time::timeout(RECORD_QUEUE_WAIT, records.send(record)).await.is_err() {
                        metrics::counter!("courier_attempt_records_dropped_total", "reason" => "queue_full")
                            .increment(1);
                        tracing::error!(delivery.id = %ids.0, attempt = ids.1,
                            "the recorder is not keeping up; this attempt goes unrecorded and its lease will bring it back");
                    }
                }
                drop(held);
            });
            claimed_now.insert(handle.id(), key);
        }
        // Claimed past a share in the same batch: hand back, untouched, for a moment.
        if let Err(err) = courier_scheduler::release(&self.pool, &over_cap, Duration::from_millis(50)).await {
            tracing::error!(error = %err, "releasing over-cap deliveries failed; their leases will expire");
        }
    }

    /// One attempt: prepare → send → classify. `None` when the webhook turned inactive (the delivery is cancelled).
    async fn attempt(&self, delivery: ClaimedDelivery) -> Option<AttemptRecord> {
        let span = tracing::info_span!(
            "delivery_attempt",
            otel.kind = "client",
            delivery.id = %delivery.id,
            event.id = %delivery.event.id,
            webhook.id = %delivery.webhook.id,
            attempt = delivery.attempt,
            http.status = Empty,
            error = Empty,
            outcome = Empty,
        );
        // Linked, not parented: the ingest request finished long ago, and one request fans out to many attempts.
        if let Some(ingest) = &delivery.trace_parent {
            span.add_link(ingest.to_span_context());
        }
        async move {
            if !delivery.webhook.active {
                let claimed = [(delivery.id.clone(), delivery.attempt)];
                if let Err(err) = lifecycle::cancel_claimed(&self.pool, &claimed).await {
                    tracing::error!(error = %err, "cancelling a delivery of an inactive webhook failed");
                }
                tracing::Span::current().record("outcome", "cancelled");
                metrics::counter!("courier_deliveries_finished_total", "outcome" => "cancelled").increment(1);
                return None;
            }
            let started_at = Utc::now();
            let sent = match delivery.webhook.secrets(&self.key, started_at) {
                Ok(secrets) => {
                    let prepared = stages::prepare(&delivery, &secrets, started_at);
                    let timestamp = prepared.timestamp;
                    (stages::send(&self.http, &self.policy, &delivery, prepared).await, timestamp)
                }
                Err(err) => {
                    // Our own failure (a wrong master key): recorded as an attempt so it is visible, then retried.
                    tracing::error!(error = %err, "cannot decrypt the webhook secret");
                    let sent = stages::Sent {
                        result: courier_core::AttemptResult::Error(courier_core::ErrorKind::Other),
                        error_message: Some("the webhook secret could not be decrypted".to_owned()),
                        response_body: None,
                        duration: Duration::ZERO,
                    };
                    (sent, started_at.timestamp())
                }
            };
            let (sent, signature_timestamp) = sent;
            let next = outcome::decide(&self.config.retry, delivery.attempt, delivery.max_attempts, sent.result);
            let span = tracing::Span::current();
            match sent.result {
                courier_core::AttemptResult::Response { status, .. } => span.record("http.status", status),
                courier_core::AttemptResult::Error(kind) => span.record("error", kind.as_str()),
            };
            span.record("outcome", next.as_str());
            crate::telemetry::attempt_finished(sent.result, sent.duration, next);
            Some(AttemptRecord {
                delivery_id: delivery.id,
                webhook_id: delivery.webhook.id,
                attempt: delivery.attempt,
                started_at,
                duration: sent.duration,
                result: sent.result,
                error_message: sent.error_message,
                response_body: sent.response_body,
                signature_timestamp,
                next,
            })
        }
        .instrument(span)
        .await
    }
}

fn forget(
    claimed_now: &mut HashMap<tokio::task::Id, (courier_core::DeliveryId, u32)>,
    done: std::result::Result<(tokio::task::Id, ()), tokio::task::JoinError>,
) {
    let id = match done {
        Ok((id, ())) => id,
        Err(err) => {
            // An aborted attempt stays in `claimed_now` so shutdown releases it.
            if err.is_cancelled() {
                return;
            }
            err.id()
        }
    };
    claimed_now.remove(&id);
}

/// Writes attempt records in batches: whatever has arrived, up to 500, in one transaction. A batch PostgreSQL
/// refuses for its data is split by the scheduler, so only an unreachable database makes it wait, with backoff.
async fn record_batches(pool: PgPool, mut rx: mpsc::Receiver<AttemptRecord>) {
    let mut batch = Vec::with_capacity(500);
    while rx.recv_many(&mut batch, 500).await > 0 {
        let mut backoff = Duration::from_millis(100);
        loop {
            match courier_scheduler::record(&pool, &batch).await {
                Ok(recorded) => {
                    crate::telemetry::recorded(&recorded);
                    break;
                }
                Err(err) => {
                    // The attempts happened; keep them until the database takes them (their leases protect them).
                    tracing::error!(error = %err, count = batch.len(), "recording attempts failed; retrying");
                    metrics::counter!("courier_attempt_record_retries_total").increment(1);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        batch.clear();
    }
}

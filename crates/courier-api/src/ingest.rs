//! Ingest: events stored and fanned out in one transaction, with requests that arrive together sharing it.
//!
//! Every ingest request hands its events to one dispatcher. The dispatcher takes whatever requests are waiting (it
//! never waits for more) and runs them as one transaction, with up to [`IN_FLIGHT`] transactions at once; under
//! load, requests therefore gather while the previous transactions commit. One transaction of fifty events costs
//! PostgreSQL about what one of a single event does (a commit, a WAL flush, a few statements), so this is what lets
//! single-event requests go faster than the transaction rate. Nothing is answered before its transaction commits,
//! so an accepted event is durable exactly as before.
//!
//! If a shared transaction fails, each request in it is retried in a transaction of its own, so one request can
//! never fail another.

use std::collections::HashMap;
use std::sync::Arc;

use courier_core::TraceParent;
use courier_scheduler::enqueue_fanout_many;
use courier_scheduler::fanout::FanoutEvent;
use courier_scheduler::logs;
use courier_scheduler::wake::Notifier;
use courier_store::Owner;
use courier_store::events::{self, Inserted, NewEvent, StoredEvent};
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::{ApiError, ApiResult};
use crate::routes::events::Accepted;
use crate::supervise::{Components, supervise};

/// Transactions in progress at once.
pub const IN_FLIGHT: usize = 4;
/// A shared transaction takes no more requests once it holds this many events (one batch request may exceed it).
pub const MAX_EVENTS: usize = 500;

/// One event's answer: accepted (and whether now, `true`, or before, `false`) or refused.
pub type Answer = Result<(Accepted, bool), ApiError>;

struct Job {
    owner: Owner,
    events: Vec<NewEvent>,
    trace: Option<TraceParent>,
    reply: oneshot::Sender<ApiResult<Vec<Answer>>>,
}

/// The handle handlers submit to; the dispatcher stops when the last handle is dropped.
#[derive(Clone)]
pub struct Ingest {
    jobs: mpsc::Sender<Job>,
}

impl Ingest {
    /// Starts the dispatcher under supervision: should it ever panic, it is restarted on the same queue (waiting
    /// requests are kept; those it was committing answer 503, and their clients retry with the same event id).
    pub fn spawn(pool: PgPool, workers: Notifier, components: Components) -> Self {
        let (jobs, rx) = mpsc::channel(4 * MAX_EVENTS);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        tokio::spawn(supervise("ingest", components, CancellationToken::new(), move || {
            let (pool, workers, rx) = (pool.clone(), workers.clone(), rx.clone());
            async move {
                dispatch(pool, workers, &mut *rx.lock().await).await;
                Ok::<(), std::convert::Infallible>(())
            }
        }));
        Self { jobs }
    }

    /// Stores `events` for `owner` and fans them out; answers per event, in order, once committed.
    pub async fn submit(
        &self,
        owner: Owner,
        events: Vec<NewEvent>,
        trace: Option<TraceParent>,
    ) -> ApiResult<Vec<Answer>> {
        let (reply, answer) = oneshot::channel();
        // Not committed, so not accepted: the client retries with the same id (the guide's advice for a 503).
        let stopped =
            || ApiError::retry_later("ingest is restarting; retry with the same event id", "the dispatcher stopped");
        self.jobs.send(Job { owner, events, trace, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Ends when every handle is gone.
async fn dispatch(pool: PgPool, workers: Notifier, rx: &mut mpsc::Receiver<Job>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let Some(first) = rx.recv().await else { return };
        let mut size = first.events.len();
        let mut jobs = vec![first];
        while size < MAX_EVENTS {
            match rx.try_recv() {
                Ok(job) => {
                    size += job.events.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let (pool, workers) = (pool.clone(), workers.clone());
        tokio::spawn(async move {
            run(&pool, &workers, jobs).await;
            drop(slot);
        });
    }
}

/// Runs `jobs` in one transaction; if that fails and there were several, each in its own.
async fn run(pool: &PgPool, workers: &Notifier, jobs: Vec<Job>) {
    let shared = jobs.len() > 1;
    match commit(pool, workers, &jobs).await {
        Ok(answers) => {
            for (job, answer) in jobs.into_iter().zip(answers) {
                let _ = job.reply.send(Ok(answer));
            }
        }
        Err(err) if !shared => {
            let _ = jobs.into_iter().next().map(|job| job.reply.send(Err(err)));
        }
        Err(err) => {
            tracing::warn!(
                status = err.status().as_u16(),
                requests = jobs.len(),
                "a shared ingest transaction failed; retrying each request alone"
            );
            for job in jobs {
                let answer = commit(pool, workers, std::slice::from_ref(&job)).await.map(|mut a| a.remove(0));
                let _ = job.reply.send(answer);
            }
        }
    }
}

/// One transaction for all of `jobs`: the answers per job, in order.
async fn commit(pool: &PgPool, workers: &Notifier, jobs: &[Job]) -> ApiResult<Vec<Vec<Answer>>> {
    let mut tx = pool.begin().await?;
    let mut answers: Vec<Vec<Answer>> = jobs.iter().map(|_| Vec::new()).collect();
    let mut fanned_out = 0u64;
    let mut ingested = Vec::new();
    // One set of statements per owner, however many requests it made.
    let mut owners: Vec<Owner> = Vec::new();
    for job in jobs {
        if !owners.contains(&job.owner) {
            owners.push(job.owner);
        }
    }
    for owner in owners {
        let mine: Vec<usize> = (0..jobs.len()).filter(|&i| jobs[i].owner == owner).collect();
        let events: Vec<NewEvent> = mine.iter().flat_map(|&i| jobs[i].events.iter().cloned()).collect();
        let traces: Vec<Option<TraceParent>> =
            mine.iter().flat_map(|&i| std::iter::repeat_n(jobs[i].trace, jobs[i].events.len())).collect();
        let outcome = store(&mut tx, owner, &events, &traces).await?;
        fanned_out += outcome.deliveries;
        ingested.extend(outcome.fresh_types);
        let mut answers_of_owner = outcome.answers.into_iter();
        for i in mine {
            answers[i] = answers_of_owner.by_ref().take(jobs[i].events.len()).collect();
        }
    }
    tx.commit().await?;
    if fanned_out > 0 {
        workers.wake();
    }
    for event_type in ingested {
        metrics::counter!("courier_events_ingested_total", "type" => event_type).increment(1);
    }
    Ok(answers)
}

struct Stored {
    answers: Vec<Answer>,
    deliveries: u64,
    fresh_types: Vec<&'static str>,
}

/// Inserts one owner's events and fans out the new ones, inside the caller's transaction.
async fn store(
    conn: &mut PgConnection,
    owner: Owner,
    new: &[NewEvent],
    traces: &[Option<TraceParent>],
) -> ApiResult<Stored> {
    let inserted = events::insert_many(conn, owner, new).await?;
    let fresh: Vec<FanoutEvent<'_>> = inserted
        .iter()
        .zip(traces)
        .filter_map(|(i, trace)| match i {
            Inserted::New(s) => Some(FanoutEvent {
                id: &s.event.id,
                event_type: s.event.event_type,
                call_id: s.event.data.call_id(),
                trace: *trace,
            }),
            _ => None,
        })
        .collect();
    let counts = enqueue_fanout_many(conn, owner, &fresh).await?;
    let fanned: HashMap<&str, u64> = fresh.iter().zip(&counts).map(|(e, n)| (e.id.as_str(), *n)).collect();
    let repeats: Vec<&courier_core::EventId> =
        inserted.iter().filter_map(|i| if let Inserted::Repeat(s) = i { Some(&s.event.id) } else { None }).collect();
    let mut earlier = HashMap::new();
    if !repeats.is_empty() {
        earlier = logs::fanout_counts(&mut *conn, owner, &repeats).await?.into_iter().collect::<HashMap<_, _>>();
    }
    let deliveries_of = |s: &StoredEvent| {
        let id = s.event.id.as_str();
        fanned.get(id).copied().or_else(|| earlier.get(id).copied()).unwrap_or(0)
    };
    let answers = inserted
        .iter()
        .map(|outcome| {
            let accepted = |s: &StoredEvent| Accepted { id: s.event.id.to_string(), deliveries: deliveries_of(s) };
            match outcome {
                Inserted::New(s) => Ok((accepted(s), true)),
                Inserted::Repeat(s) => Ok((accepted(s), false)),
                Inserted::Conflict => Err(ApiError::conflict("this event id was already used for a different event")),
            }
        })
        .collect();
    let deliveries = counts.iter().sum();
    Ok(Stored { answers, deliveries, fresh_types: fresh.iter().map(|e| e.event_type.as_str()).collect() })
}

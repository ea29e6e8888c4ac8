//! Ingest: events stored and fanned out in one commit, with requests that arrive together sharing it.
//!
//! Every ingest request hands its events to one dispatcher. The dispatcher takes whatever requests are waiting (it
//! never waits for more) and commits them together, with up to [`IN_FLIGHT`] commits in progress at once; under
//! load, requests therefore gather while the previous ones commit. One commit of fifty events costs PostgreSQL
//! about what one of a single event does (a WAL flush, one statement per owner), so this is what lets
//! single-event requests go faster than the commit rate. One owner's events are a single statement, committed
//! without `BEGIN` and `COMMIT`; several owners share a transaction. Nothing is answered before it commits,
//! so an accepted event is durable exactly as before.
//!
//! If a shared commit fails, each request in it is retried in a commit of its own, so one request can
//! never fail another.
//!
//! This is the "accept these events for this owner" use case; it answers in domain terms ([`Answer`]) and the API
//! maps them to its response bodies.

use std::collections::HashMap;
use std::sync::Arc;

use courier_core::{EventId, TraceParent};
use courier_store::Owner;
use courier_store::events::{Inserted, NewEvent, StoredEvent};
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::ClaimedDelivery;
use crate::fanout::{self, EventsStored, Route};
use crate::handover::{Handover, Reserved};
use crate::wake::Notifier;
use crate::{Error, Result};

/// Commits in progress at once. Two rather than four: with 32 concurrent emitters the requests then gather into
/// larger commits, each of which writes one journal row (and its later delete) for its whole fan-out; measured
/// (BENCHMARKS.md), a burst wrote 4.20 rows per delivery instead of 4.56, at 1.08× the deliveries per second.
pub const IN_FLIGHT: usize = 2;
/// A shared commit takes no more requests once it holds this many events (one batch request may exceed it).
pub const MAX_EVENTS: usize = 500;

/// An event stored with its deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub id: EventId,
    /// How many deliveries it fanned out to when it was first accepted.
    pub deliveries: u64,
    /// True when this request stored it; false for an idempotent repeat of the same event.
    pub first_time: bool,
}

/// Why one event of a request was not accepted (the others may have been).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("this event id was already used for a different event")]
    Conflict,
}

/// One event's answer.
pub type Answer = std::result::Result<Accepted, Refused>;

/// Why a whole request got no answers.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The dispatcher stopped (it is restarted by its supervisor): nothing was committed, retry with the same ids.
    #[error("the ingest dispatcher is restarting")]
    Stopped,
    #[error(transparent)]
    Failed(#[from] Error),
}

/// One request's events, and the trace context of the request that brought them.
struct Request {
    owner: Owner,
    events: Vec<NewEvent>,
    trace: Option<TraceParent>,
}

struct Job {
    request: Request,
    reply: oneshot::Sender<Result<Vec<Answer>>>,
}

/// The handle requests submit to. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    jobs: mpsc::Sender<Job>,
}

/// The loop that commits what was submitted; run it under a supervisor ([`Dispatcher::run`]).
#[derive(Clone)]
pub struct Dispatcher {
    pool: PgPool,
    workers: Workers,
    jobs: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
}

/// Who gets the new deliveries: every worker through a wake-up, and under `courier serve` this process's worker
/// through the handover first.
#[derive(Clone)]
pub struct Workers {
    pub notifier: Notifier,
    pub handover: Option<Handover>,
}

/// The worker that shares this process (`courier serve`): woken directly, and handed deliveries over.
#[derive(Clone)]
pub struct LocalWorker {
    pub wake: crate::wake::LocalWake,
    pub handover: Handover,
}

impl From<Notifier> for Workers {
    fn from(notifier: Notifier) -> Self {
        Self { notifier, handover: None }
    }
}

impl Ingest {
    /// A handle and the dispatcher serving it. Should the dispatcher panic, running it again continues on the same
    /// queue (waiting requests are kept; those it was committing get [`IngestError::Stopped`]).
    pub fn new(pool: PgPool, workers: impl Into<Workers>) -> (Self, Dispatcher) {
        let (jobs, rx) = mpsc::channel(4 * MAX_EVENTS);
        let workers = workers.into();
        (Self { jobs }, Dispatcher { pool, workers, jobs: Arc::new(tokio::sync::Mutex::new(rx)) })
    }

    /// Stores `events` for `owner` and fans them out; answers per event, in order, once committed.
    pub async fn submit(
        &self,
        owner: Owner,
        events: Vec<NewEvent>,
        trace: Option<TraceParent>,
    ) -> std::result::Result<Vec<Answer>, IngestError> {
        let (reply, answer) = oneshot::channel();
        // Not committed, so not accepted: the client retries with the same id (the guide's advice for a 503).
        self.jobs
            .send(Job { request: Request { owner, events, trace }, reply })
            .await
            .map_err(|_| IngestError::Stopped)?;
        Ok(answer.await.map_err(|_| IngestError::Stopped)??)
    }
}

impl Dispatcher {
    /// Ends when every [`Ingest`] handle is gone.
    pub async fn run(&self) {
        dispatch(&self.pool, &self.workers, &mut *self.jobs.lock().await).await;
    }
}

/// Stores one request's events for `owner` and fans them out in a commit of its own, then wakes the workers:
/// what the dispatcher does for a request that could not share a commit.
pub async fn accept(
    pool: &PgPool,
    workers: &Notifier,
    owner: Owner,
    events: Vec<NewEvent>,
    trace: Option<TraceParent>,
) -> Result<Vec<Answer>> {
    let workers = Workers::from(workers.clone());
    Ok(commit(pool, &workers, &[Request { owner, events, trace }]).await?.remove(0))
}

/// Stores the events of several owners in one transaction and fans them out, then wakes the workers (or hands
/// them over): a poll of Kafka records, whatever tenants they name. The answers per request, in order.
pub async fn accept_all(
    pool: &PgPool,
    workers: &Workers,
    requests: Vec<(Owner, Vec<NewEvent>)>,
) -> Result<Vec<Vec<Answer>>> {
    let requests: Vec<Request> =
        requests.into_iter().map(|(owner, events)| Request { owner, events, trace: None }).collect();
    commit(pool, workers, &requests).await
}

/// Ends when every handle is gone.
async fn dispatch(pool: &PgPool, workers: &Workers, rx: &mut mpsc::Receiver<Job>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let Some(first) = rx.recv().await else { return };
        let mut size = first.request.events.len();
        let mut jobs = vec![first];
        while size < MAX_EVENTS {
            match rx.try_recv() {
                Ok(job) => {
                    size += job.request.events.len();
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

/// Runs `jobs` in one commit; if that fails and there were several, each in its own.
async fn run(pool: &PgPool, workers: &Workers, jobs: Vec<Job>) {
    let shared = jobs.len() > 1;
    let (requests, replies): (Vec<Request>, Vec<_>) = jobs.into_iter().map(|job| (job.request, job.reply)).unzip();
    match commit(pool, workers, &requests).await {
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Err(err) if !shared => {
            let _ = replies.into_iter().next().map(|reply| reply.send(Err(err)));
        }
        Err(err) => {
            tracing::warn!(error = %err, requests = requests.len(),
                "a shared ingest commit failed; retrying each request alone");
            for (request, reply) in requests.iter().zip(replies) {
                let answer = commit(pool, workers, std::slice::from_ref(request)).await.map(|mut a| a.remove(0));
                let _ = reply.send(answer);
            }
        }
    }
}

/// One commit for all of `jobs`: the answers per request, in order.
async fn commit(pool: &PgPool, workers: &Workers, jobs: &[Request]) -> Result<Vec<Vec<Answer>>> {
    let events: usize = jobs.iter().map(|job| job.events.len()).sum();
    let mut lease = workers.handover.as_ref().and_then(|h| h.reserve(events));
    // One statement per owner, however many requests it made.
    let mut owners: Vec<Owner> = Vec::new();
    for job in jobs {
        if !owners.contains(&job.owner) {
            owners.push(job.owner);
        }
    }
    let mut answers: Vec<Vec<Answer>> = jobs.iter().map(|_| Vec::new()).collect();
    let (mut fanned_out, mut leased) = (0u64, Vec::new());
    // One owner's events are written by one statement (`fanout::store_events`), which PostgreSQL commits on its own:
    // a `BEGIN` and a `COMMIT` around it would be two round trips more, a third of a lone event's ingest. Several
    // owners share a transaction, so that they share its commit.
    let mut session = match owners.len() {
        1 => Session::Alone(pool.acquire().await?),
        _ => Session::Shared(pool.begin().await?),
    };
    for owner in owners {
        let conn: &mut PgConnection = match &mut session {
            Session::Alone(conn) => conn,
            Session::Shared(tx) => tx,
        };
        let mine: Vec<usize> = (0..jobs.len()).filter(|&i| jobs[i].owner == owner).collect();
        let events: Vec<NewEvent> = mine.iter().flat_map(|&i| jobs[i].events.iter().cloned()).collect();
        let traces: Vec<Option<TraceParent>> =
            mine.iter().flat_map(|&i| std::iter::repeat_n(jobs[i].trace, jobs[i].events.len())).collect();
        let outcome = store(conn, owner, &events, &traces, lease.as_mut()).await?;
        fanned_out += outcome.deliveries;
        leased.extend(outcome.leased);
        let mut answers_of_owner = outcome.answers.into_iter();
        for i in mine {
            answers[i] = answers_of_owner.by_ref().take(jobs[i].events.len()).collect();
        }
    }
    if let Session::Shared(tx) = session {
        tx.commit().await?;
    }
    let queued = fanned_out - leased.len() as u64;
    if let (Some(handover), Some(lease)) = (&workers.handover, lease) {
        handover.hand(leased, lease);
    }
    if queued > 0 {
        workers.notifier.wake();
    }
    Ok(answers)
}

/// Where [`commit`] writes: one owner's single statement on a connection, or several owners' in a transaction.
enum Session {
    Alone(sqlx::pool::PoolConnection<sqlx::Postgres>),
    Shared(sqlx::Transaction<'static, sqlx::Postgres>),
}

struct Stored {
    answers: Vec<Answer>,
    deliveries: u64,
    /// The deliveries leased to this process's worker, to hand over once committed.
    leased: Vec<ClaimedDelivery>,
}

/// Inserts one owner's events and fans out the new ones, in one statement on the caller's connection.
async fn store(
    conn: &mut PgConnection,
    owner: Owner,
    new: &[NewEvent],
    traces: &[Option<TraceParent>],
    lease: Option<&mut Reserved>,
) -> Result<Stored> {
    let routes: Vec<Route<'_>> = traces.iter().map(|&trace| Route { trace, ..Route::default() }).collect();
    // A tenant at its share of the worker gets nothing leased: the worker would hand it back.
    let room = lease.as_deref().filter(|r| r.has_room_for(owner.tenant));
    let stored = fanout::store_events(conn, owner, new, &routes, room).await?;
    let EventsStored { inserted, deliveries: counts, handed } = stored;
    let new_events: HashMap<&str, &courier_core::Event> = inserted
        .iter()
        .filter_map(|i| if let Inserted::New(s) = i { Some((s.event.id.as_str(), &s.event)) } else { None })
        .collect();
    let mut leased = Vec::new();
    if let (Some(handed), Some(lease)) = (handed, lease) {
        leased = crate::handover::claimed(handed, lease, &new_events)?;
        lease.leased += leased.len();
    }
    let fanned: HashMap<&str, u64> = inserted
        .iter()
        .zip(&counts)
        .filter_map(
            |(i, n)| if let (Inserted::New(s), Some(n)) = (i, n) { Some((s.event.id.as_str(), *n)) } else { None },
        )
        .collect();
    let repeats: Vec<&EventId> =
        inserted.iter().filter_map(|i| if let Inserted::Repeat(s) = i { Some(&s.event.id) } else { None }).collect();
    let mut earlier = HashMap::new();
    if !repeats.is_empty() {
        earlier = fanout::counts(&mut *conn, owner, &repeats).await?;
    }
    let deliveries_of = |s: &StoredEvent| {
        let id = s.event.id.as_str();
        fanned.get(id).copied().or_else(|| earlier.get(id).copied()).unwrap_or(0)
    };
    let answers = inserted
        .iter()
        .map(|outcome| {
            let accepted = |s: &StoredEvent, first_time| Accepted {
                id: s.event.id.clone(),
                deliveries: deliveries_of(s),
                first_time,
            };
            match outcome {
                Inserted::New(s) => Ok(accepted(s, true)),
                Inserted::Repeat(s) => Ok(accepted(s, false)),
                Inserted::Conflict => Err(Refused::Conflict),
            }
        })
        .collect();
    let deliveries = counts.iter().flatten().sum();
    Ok(Stored { answers, deliveries, leased })
}

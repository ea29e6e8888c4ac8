//! Per-call ordering (`"ordering": "call"`): a webhook receives the deliveries of one call one at a time, in the
//! order their events were accepted, while other calls go in parallel; across two workers, random failures and a
//! worker killed mid-flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use courier_core::{EventData, EventId, EventType};
use courier_scheduler::wake::Notifier;
use courier_scheduler::{DeliveryStatus, ingest};
use courier_store::events::NewEvent;
use courier_store::webhooks::Ordering;
use courier_worker::WorkerConfig;
use serde_json::Value;
use sqlx::PgPool;

use crate::fixture::{Fixture, config};

/// Calls, and events per call (started, connected, agent changed, completed).
const CALLS: usize = 200;
const EVENTS_PER_CALL: usize = 4;
const CLIENTS: usize = 8;

/// A receiver that records every request's (call, position in its call) in arrival order and fails a fixed
/// pseudo-random 30 % of them with 500.
#[derive(Clone, Default)]
struct OrderReceiver {
    arrivals: Arc<Mutex<Vec<(String, usize)>>>,
    fail_slow_first: Arc<Mutex<Option<Duration>>>,
}

/// xorshift of a request's key: the same request fails or succeeds in every run.
fn fails(key: &str, share_percent: u64) -> bool {
    let mut h = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    h ^= h >> 29;
    h % 100 < share_percent
}

async fn answer(State(r): State<OrderReceiver>, body: Bytes) -> StatusCode {
    let envelope: Value = serde_json::from_slice(&body).expect("an envelope");
    let call = envelope["event"]["data"]["call_id"].as_str().expect("call_id").to_owned();
    let id = envelope["event"]["id"].as_str().expect("id");
    let position: usize = id.rsplit('_').next().and_then(|p| p.parse().ok()).expect("position in the id");
    let attempt = envelope["attempt"].as_u64().expect("attempt");
    r.arrivals.lock().expect("lock").push((call, position));
    let slow = r.fail_slow_first.lock().expect("lock").take();
    if let Some(pause) = slow {
        tokio::time::sleep(pause).await;
    }
    if fails(&format!("{id}/{attempt}"), 30) { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
}

impl OrderReceiver {
    async fn start() -> (Self, String) {
        let receiver = Self::default();
        let app = axum::Router::new().fallback(answer).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        (receiver, url)
    }

    /// Pairs of arrivals of one call that came out of order: a later event before an earlier one.
    fn inversions(&self) -> usize {
        let mut by_call: HashMap<String, Vec<usize>> = HashMap::new();
        for (call, position) in self.arrivals.lock().expect("lock").iter() {
            by_call.entry(call.clone()).or_default().push(*position);
        }
        by_call
            .values()
            .map(|seq| {
                (0..seq.len()).map(|i| seq[i + 1..].iter().filter(|later| **later < seq[i]).count()).sum::<usize>()
            })
            .sum()
    }
}

fn event(call: usize, position: usize) -> NewEvent {
    let types =
        [EventType::CallStarted, EventType::CallConnected, EventType::CallAgentChanged, EventType::CallCompleted];
    NewEvent {
        id: EventId::parse(&format!("evt_c{call}_{position}")).expect("id"),
        event_type: types[position % types.len()],
        created: None,
        data: EventData::parse(serde_json::json!({"call_id": format!("call-{call}"), "status": "in_progress"}))
            .expect("data"),
    }
}

/// Several clients post their calls' events concurrently; within one call each event is posted after the previous
/// one was accepted (the order a call's events have).
async fn ingest_calls(f: &Fixture) {
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let (pool, owner) = (f.pool.clone(), f.owner);
        clients.spawn(async move {
            let workers = Notifier::spawn(pool.clone());
            for position in 0..EVENTS_PER_CALL {
                for call in (client..CALLS).step_by(CLIENTS) {
                    let answers = ingest::accept(&pool, &workers, owner, vec![event(call, position)], None).await;
                    assert!(answers.expect("ingest")[0].is_ok());
                }
            }
        });
    }
    clients.join_all().await;
}

fn ordering_config() -> WorkerConfig {
    let mut cfg = config();
    cfg.retry.initial = Duration::from_millis(200);
    cfg.retry.cap = Duration::from_secs(2);
    cfg
}

/// Two workers, each on a pool of its own (they share the database and nothing else, as two processes do), deliver
/// CALLS × EVENTS_PER_CALL events ingested while they run; returns the inversions the receiver saw.
async fn deliver_calls(pool: PgPool, ordering: Ordering) -> (usize, Fixture) {
    let f = Fixture::new(pool).await;
    let (receiver, url) = OrderReceiver::start().await;
    f.webhook_ordered(&url, 12, ordering).await;
    let second_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect_with((*f.pool.connect_options()).clone())
        .await
        .expect("second pool");
    let first = f.start(&f.worker(ordering_config()));
    let other = courier_worker::Worker::new(second_pool, f.key.clone(), ordering_config()).expect("worker");
    let second = f.start(&other.with_clock(f.clock.clone()));
    ingest_calls(&f).await;
    f.settle().await;
    first.stop().await;
    second.stop().await;
    let statuses: Vec<DeliveryStatus> = f.deliveries().await.into_iter().map(|d| d.status).collect();
    assert_eq!(statuses.len(), CALLS * EVENTS_PER_CALL);
    assert!(statuses.iter().all(|s| *s == DeliveryStatus::Succeeded), "every delivery ends delivered");
    (receiver.inversions(), f)
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn deliveries_of_one_call_arrive_in_order_across_two_workers_and_failures(pool: PgPool) {
    let (inversions, f) = deliver_calls(pool, Ordering::Call).await;
    assert_eq!(inversions, 0, "an ordered webhook sees every call's events in order, retries included");
    // Every delivery took part in its call's chain, and none is left waiting.
    let unordered: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE call_seq IS NULL")
        .fetch_one(&f.pool)
        .await
        .expect("count");
    assert_eq!(unordered, 0);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn without_ordering_the_same_traffic_arrives_out_of_order(pool: PgPool) {
    let (inversions, _) = deliver_calls(pool, Ordering::None).await;
    assert!(inversions > 0, "the same traffic unordered shows inversions, so the ordered test can fail");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_killed_workers_delivery_is_retried_before_its_successors(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let (receiver, url) = OrderReceiver::start().await;
    *receiver.fail_slow_first.lock().expect("lock") = Some(Duration::from_secs(5));
    f.webhook_ordered(&url, 12, Ordering::Call).await;
    let workers = Notifier::spawn(f.pool.clone());
    for position in 0..3 {
        ingest::accept(&f.pool, &workers, f.owner, vec![event(7, position)], None).await.expect("ingest");
    }
    // The first worker takes the call's first delivery and dies while the receiver holds it.
    let cfg = WorkerConfig { timeout: Duration::from_secs(10), lease: Duration::from_millis(800), ..ordering_config() };
    let doomed = tokio::spawn(f.worker(cfg.clone()).run(tokio_util::sync::CancellationToken::new()));
    f.until(|| async { !receiver.arrivals.lock().expect("lock").is_empty() }).await;
    doomed.abort();
    let _ = doomed.await;
    // Another worker: nothing of the call moves until the dead lease runs out, then the same delivery goes first.
    let survivor = f.start(&f.worker(WorkerConfig { timeout: Duration::from_millis(400), ..cfg }));
    f.settle().await;
    survivor.stop().await;
    let arrivals: Vec<usize> = receiver.arrivals.lock().expect("lock").iter().map(|(_, p)| *p).collect();
    assert_eq!(arrivals.first(), Some(&0));
    assert_eq!(arrivals.get(1), Some(&0), "the killed worker's delivery is retried before its successors");
    assert_eq!(receiver.inversions(), 0, "{arrivals:?}");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_batch_keeps_its_array_order_and_waiting_deliveries_show_as_waiting(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let (receiver, url) = OrderReceiver::start().await;
    f.webhook_ordered(&url, 12, Ordering::Call).await;
    let batch: Vec<NewEvent> = (0..EVENTS_PER_CALL).rev().map(|p| event(3, p)).collect();
    let workers = Notifier::spawn(f.pool.clone());
    ingest::accept(&f.pool, &workers, f.owner, batch, None).await.expect("ingest");
    let mut statuses: Vec<DeliveryStatus> = f.deliveries().await.into_iter().map(|d| d.status).collect();
    statuses.sort_by_key(|s| s.as_str());
    assert_eq!(
        statuses,
        vec![DeliveryStatus::Pending, DeliveryStatus::Waiting, DeliveryStatus::Waiting, DeliveryStatus::Waiting]
    );
    f.drain(&f.worker(ordering_config())).await;
    let arrivals: Vec<usize> = receiver.arrivals.lock().expect("lock").iter().map(|(_, p)| *p).collect();
    let mut deduped = arrivals.clone();
    deduped.dedup();
    // The batch listed positions 3, 2, 1, 0: that is the order they were accepted in.
    assert_eq!(deduped, vec![3, 2, 1, 0], "{arrivals:?}");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn the_sweep_lets_go_a_waiting_delivery_whose_predecessor_ended_unseen(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let (receiver, url) = OrderReceiver::start().await;
    f.webhook_ordered(&url, 12, Ordering::Call).await;
    let workers = Notifier::spawn(f.pool.clone());
    ingest::accept(&f.pool, &workers, f.owner, vec![event(5, 0), event(5, 1)], None).await.expect("ingest");
    // The head ends in a transaction that did not promote its successor (as when a fan-out raced its end).
    let ended =
        sqlx::query("UPDATE deliveries SET status = 'succeeded', next_attempt_at = NULL WHERE event_id = 'evt_c5_0'")
            .execute(&f.pool)
            .await
            .expect("end the head");
    assert_eq!(ended.rows_affected(), 1);
    f.drain(&f.worker(ordering_config())).await;
    let arrivals: Vec<usize> = receiver.arrivals.lock().expect("lock").iter().map(|(_, p)| *p).collect();
    assert!(!arrivals.is_empty() && arrivals.iter().all(|p| *p == 1), "only the stranded successor goes: {arrivals:?}");
}

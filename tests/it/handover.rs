//! Handover (`courier serve`): ingest leases new deliveries to the worker of its own process in the statement
//! that stores them and hands them over in memory. None of them needs a claim, each arrives once, and deliveries a
//! worker never took are claimed again when their lease runs out, as after a crash.

use std::collections::HashSet;
use std::time::Duration;

use courier_scheduler::ingest::{Ingest, Workers};
use courier_scheduler::wake::Notifier;
use sqlx::PgPool;

use crate::fixture::{self, Fixture};
use crate::receiver::{Receiver, Reply};

/// An ingest whose new deliveries go to `handover` first.
fn ingest(pool: &PgPool, handover: courier_scheduler::handover::Handover) -> Ingest {
    let workers = Workers { notifier: Notifier::spawn(pool.clone()), handover: Some(handover) };
    let (ingest, dispatcher) = Ingest::new(pool.clone(), workers);
    tokio::spawn(async move { dispatcher.run().await });
    ingest
}

async fn wait_for(receiver: &Receiver, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while receiver.received().len() < n {
        assert!(tokio::time::Instant::now() < deadline, "{} of {n} arrived", receiver.received().len());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every delivery's status and attempt count, and how many attempts were recorded in all.
async fn outcome(pool: &PgPool) -> (Vec<(String, i32)>, i64) {
    let rows = sqlx::query_as("SELECT status, attempt_count FROM deliveries ORDER BY id")
        .fetch_all(pool)
        .await
        .expect("deliveries");
    let attempts = sqlx::query_scalar("SELECT count(*) FROM delivery_attempts").fetch_one(pool).await.expect("count");
    (rows, attempts)
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn handed_over_deliveries_arrive_once_and_the_rest_are_claimed(pool: PgPool) {
    let f = Fixture::new(pool.clone()).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    f.webhook(&receiver.url, 3).await;
    let worker = f.worker(fixture::config());
    let handover = worker.handover();
    let ingest = ingest(&pool, handover.clone());
    let running = f.start(&worker);

    // The worker's concurrency is 16, so the handover lends ingest 8 credits: one request of 8 events takes them all.
    let answers = ingest.submit(f.owner, Fixture::call_events("a", 8), None).await.expect("ingest");
    assert!(answers.iter().all(|a| a.as_ref().is_ok_and(|a| a.first_time && a.deliveries == 1)));
    assert_eq!(handover.handed(), 8);
    wait_for(&receiver, 8).await;

    // More than the credits at once: what finds no credit is enqueued pending and claimed as before.
    let answers = ingest.submit(f.owner, Fixture::call_events("b", 40), None).await.expect("ingest");
    assert_eq!(answers.len(), 40);
    wait_for(&receiver, 48).await;
    f.settle().await;
    running.stop().await;
    assert!(handover.handed() >= 8 && handover.handed() < 48, "handed {}", handover.handed());

    let ids: HashSet<String> = receiver.received().iter().map(|r| r.event_id()).collect();
    assert_eq!((ids.len(), receiver.received().len()), (48, 48), "each event arrives once");
    let (rows, attempts) = outcome(&pool).await;
    assert_eq!(rows.len(), 48);
    assert!(rows.iter().all(|(status, n)| status == "succeeded" && *n == 1), "{rows:?}");
    assert_eq!(attempts, 48);
    assert_eq!(unwritten(&pool).await, 0, "every delivery the journal held is written");
}

/// Deliveries the journal holds that `deliveries` does not: handed over, not written yet.
async fn unwritten(pool: &PgPool) -> i64 {
    courier_scheduler::queue::journal::unwritten(pool).await.expect("journal")
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn deliveries_handed_to_a_worker_that_never_took_them_are_claimed_when_their_lease_runs_out(pool: PgPool) {
    let f = Fixture::new(pool.clone()).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    f.webhook(&receiver.url, 3).await;
    // This worker asks for a handover and never runs: what ingest hands it sits in memory nobody reads, as in a
    // process killed right after ingest committed.
    let stuck = f.worker(fixture::config());
    let handover = stuck.handover();
    let ingest = ingest(&pool, handover.clone());
    let answers = ingest.submit(f.owner, Fixture::call_events("c", 3), None).await.expect("ingest");
    assert!(answers.iter().all(|a| a.as_ref().is_ok_and(|a| a.deliveries == 1)));
    assert_eq!(handover.handed(), 3);
    let (rows, _) = outcome(&pool).await;
    assert!(rows.is_empty(), "handed over, written only by their first attempt: {rows:?}");
    assert_eq!(unwritten(&pool).await, 3, "the journal holds them");
    // An idempotent repeat counts them all the same.
    let again = ingest.submit(f.owner, Fixture::call_events("c", 3), None).await.expect("repeat");
    assert!(again.iter().all(|a| a.as_ref().is_ok_and(|a| !a.first_time && a.deliveries == 1)), "{again:?}");

    // Another worker's sweep writes them back once their lease (800 ms) runs out, claims them, and they arrive.
    let other = f.worker(fixture::config());
    let running = f.start(&other);
    f.clock.advance(Duration::from_secs(1));
    wait_for(&receiver, 3).await;
    f.settle().await;
    running.stop().await;
    let (rows, attempts) = outcome(&pool).await;
    assert_eq!(rows.len(), 3, "each written once: {rows:?}");
    assert!(rows.iter().all(|(status, n)| status == "succeeded" && *n == 2), "{rows:?}");
    assert_eq!(attempts, 1 + 1 + 1, "one recorded attempt each: the lease that ran out was never sent");
    assert_eq!(receiver.received().len(), 3);
    let journal: i64 = sqlx::query_scalar("SELECT count(*) FROM delivery_handovers").fetch_one(&pool).await.expect("n");
    assert_eq!(journal, 0, "the sweep took the journal row");
    drop(stuck);
}

fn succeeded(d: &courier_scheduler::ClaimedDelivery) -> courier_scheduler::AttemptRecord {
    attempt(d, courier_core::Next::Succeeded)
}

fn attempt(d: &courier_scheduler::ClaimedDelivery, next: courier_core::Next) -> courier_scheduler::AttemptRecord {
    courier_scheduler::AttemptRecord {
        delivery_id: d.id.clone(),
        webhook_id: d.webhook.id.clone(),
        attempt: d.attempt,
        started_at: chrono::Utc::now(),
        duration: Duration::from_millis(1),
        result: courier_core::AttemptResult::Response { status: 200, retry_after: None },
        error_message: None,
        response_body: None,
        signature_timestamp: 0,
        next,
        ordered: d.ordered,
        handover: d.handover.clone(),
    }
}

/// Two events to one webhook, handed over by ingest to a worker that is this test (lease 800 ms).
async fn two_handed_over(
    f: &Fixture,
    prefix: &str,
) -> (courier_scheduler::ClaimedDelivery, courier_scheduler::ClaimedDelivery) {
    f.webhook("http://127.0.0.1:9/hook", 3).await;
    let (handover, mut handed) =
        courier_scheduler::handover::Handover::new(8, Duration::from_millis(800), f.clock.clone());
    let ingest = ingest(&f.pool, handover);
    ingest.submit(f.owner, Fixture::call_events(prefix, 2), None).await.expect("ingest");
    let a = handed.try_recv().expect("first").delivery;
    let b = handed.try_recv().expect("second").delivery;
    (a, b)
}

/// A handed-over delivery is written once, whoever comes first: its record (in its state after the attempt; the
/// same record again changes nothing), or the sweep once its lease ran out (as the claim would have left it), after
/// which a late record finishes it through the fenced update, as any late record of a lease nobody claimed again.
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_handed_over_delivery_is_written_once_by_its_record_or_by_the_sweep(pool: PgPool) {
    use courier_scheduler::queue::journal;
    let f = Fixture::new(pool.clone()).await;
    let (a, b) = two_handed_over(&f, "w").await;
    assert!(a.handover.is_some() && b.handover.is_some());

    let (a, b) = (succeeded(&a), succeeded(&b));
    let record = |d| courier_scheduler::record(&f.pool, &f.clock, std::slice::from_ref(d));
    assert_eq!(record(&a).await.expect("record").updated, 1);
    assert_eq!(record(&a).await.expect("again").updated, 0, "written once");
    assert_eq!(journal::recover(&pool, &f.clock).await.expect("sweep"), 0, "nothing before the lease runs out");

    f.clock.advance(Duration::from_secs(1));
    assert_eq!(journal::recover(&pool, &f.clock).await.expect("sweep"), 1, "only the unrecorded one");
    assert_eq!(journal::recover(&pool, &f.clock).await.expect("sweep"), 0, "and once");
    let b_row: (String, i32) = sqlx::query_as("SELECT status, attempt_count FROM deliveries WHERE id = $1")
        .bind(b.delivery_id.as_str())
        .fetch_one(&pool)
        .await
        .expect("b");
    assert_eq!(b_row, ("delivering".to_owned(), 1), "as the claim would have left it, its lease run out");

    assert_eq!(record(&b).await.expect("late").updated, 1, "the late record finishes it");
    let (rows, attempts) = outcome(&pool).await;
    assert_eq!(rows, vec![("succeeded".to_owned(), 1); 2]);
    assert_eq!(attempts, 2);
    assert_eq!(unwritten(&pool).await, 0);
}

/// Ingest leases nothing to a webhook or a tenant the worker holds its share of (the worker would hand it back):
/// those deliveries are enqueued for the claim, and the rest are still handed over.
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn nothing_is_handed_over_to_a_webhook_or_tenant_at_its_share(pool: PgPool) {
    use courier_scheduler::handover::{Full, Handover};
    let f = Fixture::new(pool.clone()).await;
    let (full, _) = f.webhook("http://127.0.0.1:9/full", 3).await;
    let (open, _) = f.webhook("http://127.0.0.1:9/open", 3).await;
    let queued = |tag: &'static str| {
        let pool = pool.clone();
        async move {
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT webhook_id FROM deliveries_live WHERE event_id LIKE $1 AND status = 'pending' ORDER BY 1",
            )
            .bind(format!("%{tag}%"))
            .fetch_all(&pool)
            .await
            .expect("queued");
            rows
        }
    };

    let at_share = Full { webhooks: vec![full.id.clone()], tenants: Vec::new() };
    let (handover, _handed) = Handover::new(8, Duration::from_secs(30), f.clock.clone());
    let handover = handover.with_room(std::sync::Arc::new(move || at_share.clone()));
    ingest(&pool, handover.clone()).submit(f.owner, Fixture::call_events("hook", 2), None).await.expect("ingest");
    assert_eq!(handover.handed(), 2, "the open webhook's deliveries are handed over");
    assert_eq!(queued("hook").await, vec![full.id.as_str().to_owned(); 2], "the full webhook's are queued");

    let tenant = Full { webhooks: Vec::new(), tenants: vec![f.owner.tenant] };
    let (handover, _handed) = Handover::new(8, Duration::from_secs(30), f.clock.clone());
    let handover = handover.with_room(std::sync::Arc::new(move || tenant.clone()));
    ingest(&pool, handover.clone()).submit(f.owner, Fixture::call_events("tenant", 1), None).await.expect("ingest");
    assert_eq!(handover.handed(), 0, "a tenant at its share gets nothing handed over");
    let mut both = vec![full.id.as_str().to_owned(), open.id.as_str().to_owned()];
    both.sort();
    assert_eq!(queued("tenant").await, both);
}

/// The last resort, an attempt PostgreSQL will not store at all (not even its outcome): a handed-over delivery is
/// still written, once, in its state after the attempt, and the same record again finds it and writes nothing.
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_handed_over_delivery_whose_attempt_cannot_be_stored_is_written_once_without_it(pool: PgPool) {
    let f = Fixture::new(pool.clone()).await;
    let (a, _) = two_handed_over(&f, "n").await;
    sqlx::query("ALTER TABLE delivery_attempts ADD CONSTRAINT refuse_every_attempt CHECK (false)")
        .execute(&pool)
        .await
        .expect("refuse attempts");

    let a = succeeded(&a);
    let record = || courier_scheduler::record(&f.pool, &f.clock, std::slice::from_ref(&a));
    let first = record().await.expect("the last resort is not an error");
    assert_eq!((first.updated, first.dropped), (1, 1), "{first:?}");
    let again = record().await.expect("again");
    assert_eq!((again.updated, again.dropped), (0, 1), "{again:?}");
    let row: (String, i32) = sqlx::query_as("SELECT status, attempt_count FROM deliveries WHERE id = $1")
        .bind(a.delivery_id.as_str())
        .fetch_one(&pool)
        .await
        .expect("written");
    assert_eq!(row, ("succeeded".to_owned(), 1));
    let attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM delivery_attempts").fetch_one(&pool).await.expect("count");
    assert_eq!(attempts, 0);
}

/// A record run again after its first run committed (the answer lost, a split batch retried) writes nothing twice,
/// even once its delivery has moved on (retried, claimed again); and erasing the tenant takes the deliveries its
/// journal still holds, so neither a late record nor the sweep brings them back.
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_record_run_twice_writes_once_and_an_erased_tenants_journal_brings_nothing_back(pool: PgPool) {
    use courier_scheduler::queue::journal;
    let f = Fixture::new(pool.clone()).await;
    let (a, b) = two_handed_over(&f, "t").await;

    let retry = attempt(&a, courier_core::Next::Retry { after: Duration::from_millis(10) });
    let record = |r| courier_scheduler::record(&f.pool, &f.clock, std::slice::from_ref(r));
    assert_eq!(record(&retry).await.expect("record").updated, 1);
    f.clock.advance(Duration::from_millis(20));
    let claimed =
        courier_scheduler::claim(&pool, &f.clock, 8, Duration::from_secs(30), courier_scheduler::Skip::default())
            .await
            .expect("claim");
    assert_eq!(claimed.len(), 1, "the retry is claimed again");
    assert_eq!(record(&retry).await.expect("again").updated, 0, "the first attempt's record, run again");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE id = $1")
        .bind(a.id.as_str())
        .fetch_one(&pool)
        .await
        .expect("rows");
    assert_eq!(rows, 1, "one row, the claim's");

    let erased = courier_scheduler::retention::purge_tenant(&pool, f.owner.tenant, None).await.expect("purge");
    assert!(erased.events >= 2, "{erased:?}");
    assert_eq!(unwritten(&pool).await, 0, "the journal went with the tenant");
    assert_eq!(record(&succeeded(&b)).await.expect("late").updated, 0, "a late record writes nothing");
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(journal::recover(&pool, &f.clock).await.expect("sweep"), 0, "nor does the sweep");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries").fetch_one(&pool).await.expect("rows");
    assert_eq!(left, 0, "nothing of the tenant came back");
}

/// A handed-over first attempt builds its payload from the event ingest has in memory; a retry, from the event read
/// back from the database. Both must be the event as stored: jsonb keeps numbers as decimals, so what the emitter
/// wrote as `1e16` or `-0.0` comes back as `10000000000000000` and `0`, and the two attempts must agree on it.
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_handed_over_first_attempt_sends_the_event_as_stored_like_its_retry(pool: PgPool) {
    let f = Fixture::new(pool.clone()).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script([Reply::Status(500)]);
    f.webhook(&receiver.url, 3).await;
    let worker = f.worker(fixture::config());
    let handover = worker.handover();
    let ingest = ingest(&pool, handover.clone());
    let running = f.start(&worker);

    let data = serde_json::from_str(r#"{"call_id": "c1", "big": 1e16, "zero": -0.0, "third": 0.3333333333333333}"#)
        .expect("json");
    let event = courier_store::events::NewEvent {
        id: courier_core::EventId::parse("evt_numbers").expect("id"),
        event_type: courier_core::EventType::CallCompleted,
        created: None,
        data: courier_core::EventData::parse(data).expect("data"),
    };
    ingest.submit(f.owner, vec![event], None).await.expect("ingest");
    assert_eq!(handover.handed(), 1, "the first attempt is the handed-over one");
    wait_for(&receiver, 1).await;
    f.settle().await;
    running.stop().await;

    let received = receiver.received();
    assert_eq!(received.len(), 2, "a 500, then the retry");
    let sent: Vec<serde_json::Value> = received.iter().map(|r| r.json()["event"]["data"].clone()).collect();
    assert_eq!(sent[0].to_string(), sent[1].to_string(), "both attempts send the same data");
    let stored: serde_json::Value =
        sqlx::query_scalar("SELECT data FROM events WHERE id = 'evt_numbers'").fetch_one(&pool).await.expect("stored");
    assert_eq!(sent[0].to_string(), stored.to_string(), "and it is the event as stored");
}

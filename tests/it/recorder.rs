//! The recorder against rows PostgreSQL refuses: one bad row never blocks another.

use std::time::Duration;

use courier_core::{AttemptResult, ErrorKind, Next, ResponseBody};
use courier_scheduler::{AttemptRecord, ClaimedDelivery, DeliveryStatus, Skip, claim, record};
use sqlx::PgPool;

use crate::fixture::Fixture;

/// `d`'s attempt with this result and decision.
pub(crate) fn attempt_of(d: &ClaimedDelivery, result: AttemptResult, next: Next) -> AttemptRecord {
    AttemptRecord {
        delivery_id: d.id.clone(),
        webhook_id: d.webhook.id.clone(),
        attempt: d.attempt,
        started_at: chrono::Utc::now(),
        duration: Duration::from_millis(3),
        result,
        error_message: None,
        response_body: None,
        signature_timestamp: chrono::Utc::now().timestamp(),
        next,
        ordered: d.ordered,
        handover: d.handover.clone(),
    }
}

async fn claim_all(f: &Fixture, n: usize) -> Vec<ClaimedDelivery> {
    let claimed = claim(&f.pool, &f.clock, 100, Duration::from_secs(30), Skip::default()).await.expect("claim");
    assert_eq!(claimed.len(), n);
    claimed
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_row_that_cannot_exist_does_not_block_the_rest_of_its_batch(pool: PgPool) {
    let f = Fixture::new(pool).await;
    f.webhook("http://127.0.0.1:9/hook", 3).await;
    for _ in 0..3 {
        f.ingest().await;
    }
    let claimed = claim_all(&f, 3).await;
    // One delivery is purged while its attempt is in flight.
    sqlx::query("DELETE FROM deliveries WHERE id = $1")
        .bind(claimed[1].id.as_str())
        .execute(&f.pool)
        .await
        .expect("purge");

    let ok = AttemptResult::Response { status: 200, retry_after: None };
    let records: Vec<_> = claimed.iter().map(|d| attempt_of(d, ok, Next::Succeeded)).collect();
    let recorded = tokio::time::timeout(Duration::from_secs(10), record(&f.pool, &f.clock, &records))
        .await
        .expect("recording never stalls")
        .expect("a refused row is not an error");
    assert_eq!(recorded.updated, 2);
    // Its attempt row may be stored (no foreign key spans the day partitions, migration 0015), but nothing shows
    // an attempt without its delivery, and it leaves with its day.
    let gone = courier_scheduler::operator::delivery(&f.pool, &claimed[1].id).await.expect("get");
    assert!(gone.is_none(), "the purged delivery stays purged");

    let left = f.deliveries().await;
    assert_eq!(left.len(), 2);
    for d in left {
        assert_eq!(d.status, DeliveryStatus::Succeeded);
        let (_, attempts) = courier_scheduler::operator::delivery(&f.pool, &d.id).await.expect("get").expect("exists");
        assert_eq!(attempts.len(), 1);
    }
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn whatever_a_receiver_said_is_stored_and_shown_safely(pool: PgPool) {
    let f = Fixture::new(pool).await;
    f.webhook("http://127.0.0.1:9/hook", 3).await;
    f.ingest().await;
    f.ingest().await;
    let claimed = claim_all(&f, 2).await;
    let mut binary = attempt_of(
        &claimed[0],
        AttemptResult::Response { status: 500, retry_after: None },
        Next::Retry { after: Duration::from_secs(60) },
    );
    binary.response_body = Some(ResponseBody::capture(vec![0, 0xff, b'{', 0], false));
    let mut failed = attempt_of(&claimed[1], AttemptResult::Error(ErrorKind::Other), Next::Failed);
    failed.error_message = Some(format!("invalid HTTP: \0\u{1b}[31m{}", "x".repeat(10_000)));
    let recorded = record(&f.pool, &f.clock, &[binary, failed]).await.expect("recorded");
    assert!(!recorded.split, "nothing in these rows can be refused");

    let (d, attempts) =
        courier_scheduler::operator::delivery(&f.pool, &claimed[0].id).await.expect("get").expect("exists");
    assert_eq!(d.status, DeliveryStatus::Pending);
    let body = attempts[0].response_body.as_ref().expect("kept");
    assert_eq!(body.as_bytes(), &[0, 0xff, b'{', 0]);
    assert!(body.is_binary());
    // The retry time is the database's clock plus the delay, whatever the worker's clock says.
    let (db_delay,): (f64,) =
        sqlx::query_as("SELECT extract(epoch FROM next_attempt_at - now())::float8 FROM deliveries WHERE id = $1")
            .bind(claimed[0].id.as_str())
            .fetch_one(&f.pool)
            .await
            .expect("delay");
    assert!((55.0..=60.5).contains(&db_delay), "{db_delay}");

    let (_, attempts) =
        courier_scheduler::operator::delivery(&f.pool, &claimed[1].id).await.expect("get").expect("exists");
    let message = attempts[0].error_message.as_deref().expect("message");
    assert!(!message.chars().any(char::is_control), "{message:?}");
    assert!(message.len() <= courier_scheduler::finish::MAX_ERROR_MESSAGE);
}

//! Hostile receivers (see `hostile_receiver`): each ends as recorded attempts, quickly, beside a healthy webhook
//! whose deliveries are not held up.

use std::time::{Duration, Instant};

use courier_scheduler::DeliveryStatus;
use courier_scheduler::logs;
use courier_worker::WorkerConfig;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::fixture::{Fixture, config};
pub(crate) use crate::hostile_receiver::{Hostile, Mode};
use crate::receiver::{Receiver, Reply};

/// The delivery timeout of this suite: every hostile mode must end within about this.
const TIMEOUT: Duration = Duration::from_millis(1500);

fn hostile_config() -> WorkerConfig {
    let base = config();
    WorkerConfig {
        // Room for a receiver's `Retry-After: 1` (the policy caps hints at its own cap).
        retry: courier_core::RetryPolicy { cap: Duration::from_secs(5), ..base.retry },
        timeout: TIMEOUT,
        connect_timeout: Duration::from_millis(500),
        lease: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(2),
        ..base
    }
}

// Long because it checks one run from every side (attempt rows, end states, the healthy webhook's latency, shutdown);
// split, each part would have to run the same slow scenario again.
/// One hostile webhook and one healthy one of the same tenant; three events; the worker loop as production runs it.
/// Every delivery must end, with exactly one recorded attempt per try; the healthy webhook's deliveries must succeed
/// promptly; and the worker must stop within its grace period.
async fn survives(pool: PgPool, mode: Mode) -> (Vec<logs::Attempt>, DeliveryStatus) {
    let f = Fixture::new(pool).await;
    let hostile = Hostile::start(mode).await;
    let healthy = Receiver::start(Reply::Status(200)).await;
    let (bad, _) = f.webhook(&hostile.url, 2).await;
    let (good, _) = f.webhook(&healthy.url, 2).await;

    let stop = CancellationToken::new();
    let worker = tokio::spawn(f.worker(hostile_config()).run(stop.clone()));
    let started = Instant::now();
    for _ in 0..3 {
        f.ingest().await;
    }
    // The healthy webhook's deliveries are recorded as succeeded while the hostile one is still being tried.
    let healthy_done = loop {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE webhook_id = $1 AND status = 'succeeded'")
                .bind(good.id.as_str())
                .fetch_one(&f.pool)
                .await
                .expect("count");
        if done == 3 {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{mode:?}: the healthy webhook was held up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Faster than one hostile timeout: the healthy webhook never waited for the hostile one.
    assert!(healthy_done < TIMEOUT, "{mode:?}: healthy deliveries took {healthy_done:?}");

    // Every hostile delivery ends: two tries (one second apart at most, plus the timeout) each.
    let deadline = Instant::now() + TIMEOUT * 2 + Duration::from_secs(6);
    while f.live_deliveries().await > 0 {
        assert!(Instant::now() < deadline, "{mode:?}: deliveries still live: {:?}", f.deliveries().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopping = Instant::now();
    stop.cancel();
    worker.await.expect("joins").expect("the worker stops cleanly");
    assert!(stopping.elapsed() < Duration::from_secs(3), "{mode:?}: shutdown took {:?}", stopping.elapsed());

    let mut statuses = Vec::new();
    let mut last_attempts = Vec::new();
    let mut total_attempts = 0;
    for d in f.deliveries().await.into_iter().filter(|d| d.webhook_id == bad.id) {
        let (d, attempts) = courier_scheduler::operator::delivery(&f.pool, &d.id).await.expect("get").expect("exists");
        assert_eq!(attempts.len() as u32, d.attempt_count, "{mode:?}: one recorded attempt per try: {attempts:?}");
        total_attempts += attempts.len();
        statuses.push(d.status);
        last_attempts = attempts;
    }
    if mode == Mode::Gone {
        // Events ingested after the first 410 disabled the webhook do not fan out to it at all.
        assert!((1..=3).contains(&statuses.len()), "{mode:?}: {statuses:?}");
    } else {
        assert_eq!(statuses.len(), 3, "{mode:?}");
    }
    // A connection reset or closed before any answer is sent once more on a fresh connection within the attempt
    // (it may have been a pooled connection the receiver had closed): two sends per attempt, never more.
    let sends_per_attempt = if matches!(mode, Mode::Reset | Mode::Close) { 2 } else { 1 };
    assert_eq!(hostile.requests(), total_attempts * sends_per_attempt, "{mode:?}: requests read vs attempts recorded");
    if mode == Mode::Gone {
        // The first 410 disables the webhook; deliveries not yet attempted are cancelled, not sent.
        let disabled: Option<String> = sqlx::query_scalar("SELECT disabled_reason FROM webhooks WHERE id = $1")
            .bind(bad.id.as_str())
            .fetch_one(&f.pool)
            .await
            .expect("webhook");
        assert_eq!(disabled.as_deref(), Some("gone"));
        assert!(statuses.iter().all(|s| matches!(s, DeliveryStatus::Failed | DeliveryStatus::Cancelled)));
        assert!(statuses.contains(&DeliveryStatus::Failed), "{statuses:?}");
        return (last_attempts, DeliveryStatus::Failed);
    }
    assert!(statuses.iter().all(|s| *s == statuses[0]), "{mode:?}: {statuses:?}");
    (last_attempts, statuses[0])
}

macro_rules! hostile_case {
    ($name:ident, $mode:expr, |$attempts:ident, $status:ident| $check:block) => {
        #[sqlx::test(migrator = "courier_store::MIGRATOR")]
        async fn $name(pool: PgPool) {
            let ($attempts, $status) = survives(pool, $mode).await;
            $check
        }
    };
}

hostile_case!(a_nul_in_the_body_is_recorded_as_binary, Mode::NulBody, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Failed);
    let body = attempts[0].response_body.as_ref().expect("body kept");
    assert_eq!(body.as_bytes(), b"{\"x\":\"\0\"}", "kept exactly");
    assert!(body.is_binary());
    assert_eq!(attempts[0].status_code, Some(500));
});

hostile_case!(invalid_utf8_is_recorded_as_binary, Mode::InvalidUtf8, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Failed);
    let body = attempts[0].response_body.as_ref().expect("body kept");
    assert!(body.is_binary());
    assert!(!body.display().contains('\0'));
});

hostile_case!(a_100_mb_body_is_cut_at_4_kib, Mode::HugeBody, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Succeeded, "a 2xx status arrived");
    let body = attempts[0].response_body.as_ref().expect("body kept");
    assert_eq!(body.as_bytes().len(), courier_core::ResponseBody::MAX_BYTES);
    assert!(body.truncated());
    assert!(attempts[0].duration_ms < TIMEOUT.as_millis() as i32, "not read to the end: {attempts:?}");
});

hostile_case!(a_trickled_body_ends_at_the_timeout, Mode::Trickle, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Succeeded, "the 200 status arrived before the trickle");
    assert!(attempts[0].duration_ms <= TIMEOUT.as_millis() as i32 + 500, "{attempts:?}");
});

hostile_case!(a_receiver_that_never_answers_times_out, Mode::Silent, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Failed);
    assert_eq!(attempts[0].error_kind, Some(courier_core::ErrorKind::Timeout));
});

hostile_case!(a_reset_is_a_failed_attempt, Mode::Reset, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Failed);
    assert!(attempts[0].error_kind.is_some(), "{attempts:?}");
});

hostile_case!(a_close_without_answer_is_a_failed_attempt, Mode::Close, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Failed);
    assert!(attempts[0].error_kind.is_some(), "{attempts:?}");
});

hostile_case!(non_http_bytes_are_a_failed_attempt, Mode::Garbage, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Failed);
    assert!(attempts[0].error_kind.is_some(), "{attempts:?}");
    let message = attempts[0].error_message.as_deref().unwrap_or_default();
    assert!(!message.contains('\0'), "{message:?}");
});

hostile_case!(an_unknown_status_is_a_failure, Mode::Status999, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Failed);
    assert_eq!(attempts[0].status_code, Some(999));
});

hostile_case!(redirects_are_not_followed, Mode::Redirect, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Failed);
    assert_eq!(attempts[0].status_code, Some(302));
});

hostile_case!(a_300_kb_header_ends_as_an_attempt, Mode::HugeHeader, |attempts, status| {
    // hyper either takes the head (a 200: success) or refuses it as too large (a failed attempt); both are data.
    match status {
        DeliveryStatus::Succeeded => assert_eq!(attempts[0].status_code, Some(200)),
        DeliveryStatus::Failed => assert!(attempts[0].error_kind.is_some(), "{attempts:?}"),
        other => panic!("unexpected {other:?}"),
    }
});

hostile_case!(broken_chunked_encoding_keeps_the_status, Mode::BrokenChunked, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Succeeded, "the 200 arrived; an unreadable body does not change it");
    assert_eq!(attempts[0].status_code, Some(200));
});

hostile_case!(a_false_content_encoding_is_kept_as_bytes, Mode::FalseEncoding, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Succeeded);
    let body = attempts[0].response_body.as_ref().expect("body kept");
    assert_eq!(body.as_bytes(), b"this is not gzip", "not decoded");
});

hostile_case!(gone_fails_and_disables, Mode::Gone, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Failed);
    assert!(attempts.len() <= 1, "a 410 is never retried: {attempts:?}");
});

hostile_case!(too_many_requests_waits_for_retry_after, Mode::TooManyRequests, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Failed);
    assert_eq!(attempts.len(), 2);
    let gap = attempts[1].started_at - attempts[0].started_at;
    assert!(gap >= chrono::Duration::milliseconds(950), "Retry-After: 1 honoured, waited {gap:?}");
});

/// A receiver that closes every connection after one answer, without `Connection: close` (short keep-alive
/// timeouts do this): the worker reuses pooled connections, finds them reset before any answer, and sends again
/// on a fresh one within the same attempt. Every delivery succeeds at its first attempt.
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_connection_the_receiver_closed_is_not_a_failed_attempt(pool: PgPool) {
    let f = Fixture::new(pool).await;
    let receiver = Hostile::start(Mode::OneAnswerPerConnection).await;
    let (webhook, _) = f.webhook(&receiver.url, 3).await;
    let stop = CancellationToken::new();
    let worker = tokio::spawn(f.worker(hostile_config()).run(stop.clone()));
    // One at a time, so each send finds the previous one's connection in the pool.
    for _ in 0..8 {
        f.ingest().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while f.live_deliveries().await > 0 {
            assert!(Instant::now() < deadline, "deliveries still live: {:?}", f.deliveries().await);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    stop.cancel();
    worker.await.expect("joins").expect("the worker stops cleanly");
    let rows: Vec<(String, i32)> =
        sqlx::query_as("SELECT status::text, attempt_count FROM deliveries WHERE webhook_id = $1")
            .bind(webhook.id.as_str())
            .fetch_all(&f.pool)
            .await
            .expect("deliveries");
    assert_eq!(rows.len(), 8);
    assert!(rows.iter().all(|(status, attempts)| status == "succeeded" && *attempts == 1), "{rows:?}");
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM delivery_attempts WHERE status_code IS NULL")
        .fetch_one(&f.pool)
        .await
        .expect("attempts");
    assert_eq!(failed, 0, "no attempt failed on a reused connection");
}

//! The `limited` scenario: tenant B's latency alone, then beside tenant A's large backlog behind a webhook limited
//! to 1 delivery a second (issue: a rate-limited backlog costs only its own tenant). Also the rows PostgreSQL
//! writes while A's backlog waits, per A delivery queued.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::measure::{measure, merge};
use crate::pg_work;
use crate::receiver::Receiver;
use crate::send::{Starts, send_at_rate, send_batches, wait_for};
use crate::setup::setup;
use crate::{Args, add_tenant};

/// Rows inserted, updated and deleted in the scenario's database so far (PostgreSQL's own counters).
async fn rows_written(url: &str) -> i64 {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.expect("connect");
    // The counters are flushed by each backend about once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sqlx::query_scalar(
        "SELECT (tup_inserted + tup_updated + tup_deleted)::int8 FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut conn)
    .await
    .expect("pg_stat_database")
}

/// Waits until A's backlog waits in line (nothing due now but a slot's worth), so B is measured beside a backlog,
/// not beside the moment it is put in line.
async fn settle(url: &str, patience: Duration) {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.expect("connect");
    let started = std::time::Instant::now();
    while started.elapsed() < patience {
        let due: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries_live WHERE due_at <= now()")
            .fetch_one(&mut conn)
            .await
            .expect("due");
        if due <= 2 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn limited(cluster: &str, a: &Args) -> Value {
    // B alone.
    let healthy = Receiver::start(None).await;
    let s = setup(cluster, "lim_solo", vec![healthy.clone()], a.worker_concurrency).await;
    let starts: Starts = Arc::default();
    let (sent, ingest) = send_at_rate(&s.courier.base, &s.emitter, a.rate, a.seconds, starts.clone()).await;
    wait_for(&[&healthy], sent, Duration::from_secs(a.stall_secs)).await;
    let solo = measure(&[&healthy], &*starts.lock().await, sent, ingest);
    s.teardown().await;

    // A's backlog behind 1/s, queued first; then B at the same rate as alone.
    let limited = Receiver::start(None).await;
    let s = setup(cluster, "lim_back", vec![limited.clone()], a.worker_concurrency).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&s.url).await.expect("connect");
    sqlx::query("UPDATE webhooks SET rate_limit_per_second = 1").execute(&mut conn).await.expect("limit A");
    drop(conn);
    let healthy = Receiver::start(None).await;
    let b = add_tenant(&s, "beside", &[&healthy]).await;
    send_batches(&s.courier.base, &s.emitter, a.limited_backlog, 100, a.batch_concurrency, Arc::default()).await;
    settle(&s.url, Duration::from_secs(a.stall_secs)).await;
    let before = rows_written(&s.url).await;
    let work = pg_work::snapshot(&s.url).await;
    let starts: Starts = Arc::default();
    let (sent, ingest) = send_at_rate(&s.courier.base, &b, a.rate, a.seconds, starts.clone()).await;
    wait_for(&[&healthy], sent, Duration::from_secs(a.stall_secs)).await;
    let contended = measure(&[&healthy], &*starts.lock().await, sent, ingest);
    // Per B delivery, A's waiting backlog included.
    let contended = merge(contended, pg_work::since(&s.url, &work, sent).await);
    let written = rows_written(&s.url).await - before;
    let a_delivered = limited.count();
    s.teardown().await;

    let p50 = |v: &Value| v["latency_ms"]["p50"].as_f64().unwrap_or(f64::NAN);
    // B's own deliveries write about what they write alone (an insert of event, key and delivery, a claim, a
    // finish and an attempt); what is left is the price of A's waiting backlog.
    let b_rows = 6.0 * sent as f64;
    json!({
        "solo": solo, "beside_limited_backlog": contended, "backlog": a.limited_backlog, "limit_per_second": 1,
        "p50_ratio": p50(&contended) / p50(&solo),
        "rows_written_during_b": written, "a_delivered_during_b": a_delivered,
        "rows_per_a_backlog_delivery": (written as f64 - b_rows).max(0.0) / a.limited_backlog as f64,
    })
}

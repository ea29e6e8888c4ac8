//! The `scaleout` scenario: two `courier api` and two `courier worker` processes on one database, events split
//! between the two APIs; every delivery must arrive exactly once (nothing fails here, so no retry may repeat one).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::measure::{measure, merge};
use crate::process::{self, Courier};
use crate::receiver::Receiver;
use crate::send::{Starts, send_singles, wait_for};
use crate::{Args, setup_as};

pub async fn scaleout(cluster: &str, a: &Args) -> Value {
    let receiver = Receiver::start(None).await;
    let s = setup_as(cluster, "scaleout", vec![receiver], a.worker_concurrency, "api").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let second_api = Courier::start_as("api", &s.url, port, &s.secret_key, a.worker_concurrency).await;
    let workers = [
        Courier::start_as("worker", &s.url, 0, &s.secret_key, a.worker_concurrency).await,
        Courier::start_as("worker", &s.url, 0, &s.secret_key, a.worker_concurrency).await,
    ];
    // A worker has no readiness endpoint: give both a moment to connect and listen, so latency is the queue's.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pg = process::postgres_cpu_seconds();
    let starts: Starts = Arc::default();
    let half = a.events / 2;
    let begun = Instant::now();
    let (one, two) = tokio::join!(
        send_singles(&s.courier.base, &s.emitter, half, a.concurrency / 2, "s1-", starts.clone()),
        send_singles(&second_api.base, &s.emitter, a.events - half, a.concurrency / 2, "s2-", starts.clone()),
    );
    let ingest = one.max(two);
    let refs: Vec<&Receiver> = s.receivers.iter().collect();
    wait_for(&refs, a.events, Duration::from_secs(a.stall_secs)).await;
    let elapsed = begun.elapsed().as_secs_f64();
    let result = measure(&refs, &*starts.lock().await, a.events, ingest);
    let pg_cpu = process::postgres_cpu_seconds() - pg;
    let worker_cpu: f64 = workers.iter().map(|w| process::cpu_seconds(w.pid())).sum();
    drop(workers);
    drop(second_api);
    s.teardown().await;
    merge(
        result,
        json!({"apis": 2, "workers": 2, "postgres_cpu_s": pg_cpu, "workers_cpu_s": worker_cpu,
                         "elapsed_s": elapsed}),
    )
}

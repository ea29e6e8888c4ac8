//! The `ordered` scenario: calls of four events each, posted in order per call by concurrent clients, to a receiver
//! that fails a fixed share of requests; once to a webhook with `"ordering": "call"` and once without. It reports
//! inversions (a later event of a call arriving before an earlier one: 0 is the promise with ordering), throughput,
//! and the claim's cost with and without many waiting deliveries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering as Atomic};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::measure::claim_cost;
use crate::process::Courier;
use crate::{Args, Setup, setup_as};

/// Calls' arrivals in order (position of each arriving event in its call) and the requests answered 200.
#[derive(Clone, Default)]
struct Calls {
    arrivals: Arc<Mutex<HashMap<String, Vec<usize>>>>,
    delivered: Arc<AtomicUsize>,
    fail_percent: u64,
}

fn fails(key: &str, percent: u64) -> bool {
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (h ^ (h >> 29)) % 100 < percent
}

async fn answer(State(calls): State<Calls>, body: Bytes) -> StatusCode {
    let envelope: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (Some(id), Some(call)) = (envelope["event"]["id"].as_str(), envelope["event"]["data"]["call_id"].as_str())
    else {
        return StatusCode::BAD_REQUEST;
    };
    let position = id.rsplit('_').next().and_then(|p| p.parse().ok()).unwrap_or(0);
    calls.arrivals.lock().expect("lock").entry(call.to_owned()).or_default().push(position);
    if fails(&format!("{id}/{}", envelope["attempt"]), calls.fail_percent) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    calls.delivered.fetch_add(1, Atomic::Relaxed);
    StatusCode::OK
}

impl Calls {
    async fn start(fail_percent: u64) -> (Self, String) {
        let calls = Self { fail_percent, ..Self::default() };
        let app = axum::Router::new().fallback(answer).with_state(calls.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        (calls, url)
    }

    fn inversions(&self) -> usize {
        let arrivals = self.arrivals.lock().expect("lock");
        arrivals
            .values()
            .map(|seq| {
                (0..seq.len()).map(|i| seq[i + 1..].iter().filter(|later| **later < seq[i]).count()).sum::<usize>()
            })
            .sum()
    }

    fn requests(&self) -> usize {
        self.arrivals.lock().expect("lock").values().map(Vec::len).sum()
    }
}

/// Posts every call's events, each after the previous one of its call was accepted; calls interleave across
/// `clients` concurrent clients.
async fn post_calls(s: &Setup, calls: usize, clients: usize) {
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let (http, base, key) = (http.clone(), s.courier.base.clone(), s.emitter.clone());
        tasks.spawn(async move {
            for position in 0..4 {
                for call in (client..calls).step_by(clients) {
                    let body = json!({"id": format!("evt_o{call}_{position}"), "type": "call.completed",
                                      "data": {"call_id": format!("call-{call}"), "status": "in_progress"}});
                    let res = http
                        .post(format!("{base}/api/v1/events"))
                        .bearer_auth(&key)
                        .body(body.to_string())
                        .send()
                        .await
                        .expect("post");
                    assert_eq!(res.status().as_u16(), 201);
                }
            }
        });
    }
    tasks.join_all().await;
}

/// One run: `ordering` is `call` or `none`.
async fn run(cluster: &str, a: &Args, ordering: &str) -> Value {
    let (calls, url) = Calls::start(a.ordered_fail_percent).await;
    // The API and a worker apart, so the worker can be stopped before the claim is timed on its own.
    let s = setup_as(cluster, &format!("ordered_{ordering}"), Vec::new(), a.worker_concurrency, "api").await;
    s.create_webhook(json!({"url": url, "ordering": ordering, "max_attempts": 25})).await;
    // Retries in a fraction of a second, so a run measures ordering rather than waiting out the default 30 s.
    let retries = [("COURIER_RETRY_INITIAL", "100ms"), ("COURIER_RETRY_MULTIPLIER", "2"), ("COURIER_RETRY_CAP", "1s")];
    let worker = Courier::start_with("worker", &s.url, 0, &s.secret_key, a.worker_concurrency, &retries).await;
    let expected = a.ordered_calls * 4;
    let begun = Instant::now();
    post_calls(&s, a.ordered_calls, a.concurrency).await;
    let ingest = begun.elapsed().as_secs_f64();
    let stall = Duration::from_secs(a.stall_secs);
    let mut last = (0, Instant::now());
    while calls.delivered.load(Atomic::Relaxed) < expected && last.1.elapsed() < stall {
        let now = calls.delivered.load(Atomic::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = begun.elapsed().as_secs_f64();
    let delivered = calls.delivered.load(Atomic::Relaxed);
    let (requests, inversions) = (calls.requests(), calls.inversions());
    worker.kill();
    let (claim_idle, claim_waiting) = if ordering == "call" { claim_with_waiting(&s.url).await } else { (None, None) };
    s.teardown().await;
    json!({
        "ordering": ordering, "events": expected, "delivered": delivered, "missing": expected.saturating_sub(delivered),
        "requests": requests, "inversions": inversions, "ingest_s": ingest,
        "deliveries_per_s": delivered as f64 / elapsed,
        "claim_ms_due_heads": claim_idle, "claim_ms_due_heads_and_waiting": claim_waiting,
    })
}

/// The claim's cost with 5,000 due chain heads, then with 200,000 deliveries waiting behind them.
async fn claim_with_waiting(url: &str) -> (Option<f64>, Option<f64>) {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.expect("connect");
    // A live delivery names its event's day from migration 0029 on; `--compare` also runs builds from before it.
    let day: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                         WHERE table_name = 'deliveries' AND column_name = 'event_received_at')",
    )
    .fetch_one(&mut conn)
    .await
    .expect("columns");
    let (day_column, day_value) = if day { (", event_received_at", ", d.event_received_at") } else { ("", "") };
    // Copies of a finished delivery: the same event and webhook, each its own call (heads) or a successor in one.
    let copy = |status: &str, calls: &str, seq: &str| {
        format!(
            "INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status,
                                     max_attempts, next_attempt_at, call_seq{day_column})
             SELECT left(d.id, 14) || lpad(upper(to_hex(g + {seq})), 16, '0'), d.tenant_id, d.environment, d.event_id,
                    d.webhook_id, d.event_type, 'bench-' || ({calls}), '{status}', d.max_attempts,
                    CASE WHEN '{status}' = 'pending' THEN now() END, {seq} + g{day_value}
             FROM (SELECT * FROM deliveries LIMIT 1) d, generate_series(1, $1) g"
        )
    };
    let insert = |sql: String, n: i64| sqlx::query(sqlx::AssertSqlSafe(sql)).bind(n);
    insert(copy("pending", "g", "1000000000"), 5_000).execute(&mut conn).await.expect("heads");
    sqlx::query("ANALYZE deliveries").execute(&mut conn).await.expect("analyze");
    let heads = claim_cost(url).await;
    insert(copy("waiting", "g % 5000 + 1", "2000000000"), 200_000).execute(&mut conn).await.expect("waiting");
    sqlx::query("ANALYZE deliveries").execute(&mut conn).await.expect("analyze");
    (Some(heads), Some(claim_cost(url).await))
}

pub async fn ordered(cluster: &str, a: &Args) -> Value {
    let on = run(cluster, a, "call").await;
    let off = run(cluster, a, "none").await;
    let ratio = on["deliveries_per_s"].as_f64().unwrap_or(0.0) / off["deliveries_per_s"].as_f64().unwrap_or(1.0);
    json!({"ordered": on, "unordered": off, "ordered_throughput_ratio": ratio,
           "missing": on["missing"].as_u64().unwrap_or(0) + off["missing"].as_u64().unwrap_or(0)})
}

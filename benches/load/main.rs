//! End-to-end load benchmark: a private PostgreSQL, Courier `serve` as a child process, fast local receivers,
//! load through the real HTTP API. Prints one JSON object on stdout and a table on stderr.
//!
//! `make bench` runs every scenario with the defaults; `cargo bench --bench load -- --help` lists the knobs.

mod process;
mod receiver;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use process::{Courier, cli};
use receiver::Receiver;

#[derive(Debug, Clone, Parser)]
#[command(about = "Courier's end-to-end load benchmark")]
struct Args {
    /// burst, batch, rate, fairness, tenants, backlog (comma-separated), or all; `logs` (slow: it generates
    /// millions of rows) runs only when named.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Tiny counts, to prove the harness works (make test runs this).
    #[arg(long)]
    smoke: bool,
    /// burst: events, single-event endpoint.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// burst and rate: concurrent requests.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// batch: events in all.
    #[arg(long, default_value_t = 100_000)]
    batch_events: usize,
    /// batch: events per request.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// batch: concurrent requests.
    #[arg(long, default_value_t = 4)]
    batch_concurrency: usize,
    /// rate: events per second.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// rate: seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// fairness and tenants: events to the healthy webhook.
    #[arg(long, default_value_t = 5_000)]
    fairness_events: usize,
    /// tenants: events to the other tenant's four hanging webhooks (each fans out to all four).
    #[arg(long, default_value_t = 500)]
    hanging_events: usize,
    /// backlog: deliveries already pending when the workers start.
    #[arg(long, default_value_t = 100_000)]
    backlog: usize,
    /// backlog: finished deliveries added to measure the claim's cost against.
    #[arg(long, default_value_t = 1_000_000)]
    finished_rows: usize,
    /// logs: finished deliveries of one tenant in the history the log pages are timed against.
    #[arg(long, default_value_t = 10_000_000)]
    log_rows: usize,
    /// Webhooks every event fans out to (burst, batch, rate).
    #[arg(long, default_value_t = 1)]
    webhooks: usize,
    /// Courier's COURIER_WORKER_CONCURRENCY (its default).
    #[arg(long, default_value_t = 256)]
    worker_concurrency: usize,
    /// Give up waiting for deliveries after this many seconds without progress.
    #[arg(long, default_value_t = 20)]
    stall_secs: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Send-start time of every event, by its numeric suffix.
type Starts = Arc<Mutex<HashMap<String, Instant>>>;

struct Setup {
    courier: Courier,
    url: String,
    secret_key: String,
    emitter: String,
    receivers: Vec<Receiver>,
    database: String,
    admin_url: String,
}

async fn setup(cluster_url: &str, name: &str, receivers: Vec<Receiver>, concurrency: usize) -> Setup {
    setup_as(cluster_url, name, receivers, concurrency, "serve").await
}

async fn setup_as(cluster_url: &str, name: &str, receivers: Vec<Receiver>, concurrency: usize, command: &str) -> Setup {
    let (prefix, _) = cluster_url.rsplit_once('/').expect("URL has a database");
    let database = format!("courier_bench_{name}_{}", std::process::id());
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(cluster_url).await.expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {database}")))
        .execute(&mut admin)
        .await
        .expect("drop");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}"))).execute(&mut admin).await.expect("create");
    let url = format!("{prefix}/{database}");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let secret_key = courier_core::MasterKey::generate_base64();
    let courier = Courier::start_as(command, &url, port, &secret_key, concurrency).await;
    let tenant = cli(&url, &["tenants", "create", "--name", "bench", "--json"]);
    let tenant = tenant["id"].as_str().expect("tenant id");
    let key = |scopes: &str| {
        cli(&url, &["keys", "create", "--tenant", tenant, "--env", "test", "--scopes", scopes, "--json"])
    };
    let admin_key = key("webhooks:write")["key"].as_str().expect("key").to_owned();
    let emitter = key("events:write")["key"].as_str().expect("key").to_owned();
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    for r in &receivers {
        let res = http
            .post(format!("{}/api/v1/webhooks", courier.base))
            .bearer_auth(&admin_key)
            .body(json!({"url": r.url}).to_string())
            .send()
            .await
            .expect("create webhook");
        assert_eq!(res.status().as_u16(), 201);
    }
    Setup { courier, url, secret_key, emitter, receivers, database, admin_url: cluster_url.to_owned() }
}

impl Setup {
    async fn teardown(self) {
        drop(self.courier);
        if let Ok(mut admin) = <sqlx::PgConnection as sqlx::Connection>::connect(&self.admin_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database)))
                .execute(&mut admin)
                .await;
        }
    }
}

fn event(id: &str) -> Value {
    json!({"id": id, "type": "call.completed",
           "data": {"call_id": id, "status": "completed", "duration_seconds": 180, "user_id": "user-123",
                    "transcript": [{"role": "assistant", "content": "Hello!"}], "metrics": {"message_count": 15}}})
}

/// Sends `count` events through the single-event endpoint, `concurrency` at a time.
async fn send_singles(base: &str, key: &str, count: usize, concurrency: usize, tag: &str, starts: Starts) -> Duration {
    let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(concurrency).build().expect("client");
    let next = Arc::new(AtomicUsize::new(0));
    let begun = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (http, next, starts, base, key, tag) =
            (http.clone(), next.clone(), starts.clone(), base.to_owned(), key.to_owned(), tag.to_owned());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let id = format!("evt_{tag}{i}");
                let body = event(&id).to_string();
                starts.lock().await.insert(id, Instant::now());
                let res =
                    http.post(format!("{base}/api/v1/events")).bearer_auth(&key).body(body).send().await.expect("post");
                assert_eq!(res.status().as_u16(), 201, "{}", res.text().await.unwrap_or_default());
            }
        });
    }
    tasks.join_all().await;
    begun.elapsed()
}

async fn send_batches(
    base: &str,
    key: &str,
    count: usize,
    size: usize,
    concurrency: usize,
    starts: Starts,
) -> Duration {
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let next = Arc::new(AtomicUsize::new(0));
    let begun = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (http, next, starts, base, key) =
            (http.clone(), next.clone(), starts.clone(), base.to_owned(), key.to_owned());
        tasks.spawn(async move {
            loop {
                let first = next.fetch_add(size, Ordering::Relaxed);
                if first >= count {
                    break;
                }
                let ids: Vec<String> = (first..(first + size).min(count)).map(|i| format!("evt_bt{i}")).collect();
                let body = json!({"events": ids.iter().map(|id| event(id)).collect::<Vec<_>>()}).to_string();
                let now = Instant::now();
                starts.lock().await.extend(ids.into_iter().map(|id| (id, now)));
                let res = http
                    .post(format!("{base}/api/v1/events/batch"))
                    .bearer_auth(&key)
                    .body(body)
                    .send()
                    .await
                    .expect("post");
                assert_eq!(res.status().as_u16(), 200);
            }
        });
    }
    tasks.join_all().await;
    begun.elapsed()
}

async fn send_at_rate(base: &str, key: &str, rate: u64, seconds: u64, starts: Starts) -> (usize, Duration) {
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let total = (rate * seconds) as usize;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let begun = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        ticker.tick().await;
        let (http, starts, base, key) = (http.clone(), starts.clone(), base.to_owned(), key.to_owned());
        tasks.spawn(async move {
            let id = format!("evt_r{i}");
            let body = event(&id).to_string();
            starts.lock().await.insert(id, Instant::now());
            let res =
                http.post(format!("{base}/api/v1/events")).bearer_auth(&key).body(body).send().await.expect("post");
            assert_eq!(res.status().as_u16(), 201);
        });
    }
    tasks.join_all().await;
    (total, begun.elapsed())
}

/// Waits until the receivers hold `expected` arrivals, or nothing new arrived for `stall`.
async fn wait_for(receivers: &[&Receiver], expected: usize, stall: Duration) {
    let mut last = 0;
    let mut last_change = Instant::now();
    loop {
        let now: usize = receivers.iter().map(|r| r.count()).sum();
        if now >= expected {
            return;
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() > stall {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Throughput, latency, duplicates and missing deliveries from what the receivers saw.
fn measure(receivers: &[&Receiver], starts: &HashMap<String, Instant>, events: usize, ingest: Duration) -> Value {
    let expected = events * receivers.len();
    let mut latencies = Vec::with_capacity(expected);
    let (mut delivered, mut duplicates) = (0usize, 0usize);
    let mut first_send = None::<Instant>;
    let mut last_arrival = None::<Instant>;
    for start in starts.values() {
        first_send = Some(first_send.map_or(*start, |f| f.min(*start)));
    }
    for r in receivers {
        for (id, arrivals) in r.take().by_event {
            delivered += 1;
            duplicates += arrivals.len() - 1;
            let first = arrivals.iter().min().copied().expect("one arrival");
            last_arrival = Some(last_arrival.map_or(first, |l| l.max(first)));
            if let Some(start) = starts.get(&id) {
                latencies.push(first.duration_since(*start).as_secs_f64() * 1000.0);
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let span = match (first_send, last_arrival) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
        _ => f64::NAN,
    };
    json!({
        "events": events,
        "deliveries_expected": expected,
        "ingest_events_per_s": events as f64 / ingest.as_secs_f64(),
        "deliveries_per_s": delivered as f64 / span,
        "latency_ms": {"p50": percentile(&latencies, 50.0), "p90": percentile(&latencies, 90.0),
                       "p99": percentile(&latencies, 99.0), "max": latencies.last().copied().unwrap_or(0.0)},
        "duplicates": duplicates,
        "missing": expected.saturating_sub(delivered),
    })
}

fn resources(courier: &Courier, pg_before: f64) -> Value {
    json!({
        "courier_peak_rss_mib": process::peak_rss_mib(courier.pid()),
        "courier_cpu_s": process::cpu_seconds(courier.pid()),
        "postgres_cpu_s": process::postgres_cpu_seconds() - pg_before,
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

async fn burst(cluster: &str, a: &Args) -> Value {
    let receivers: Vec<Receiver> = futures(a.webhooks, None).await;
    let s = setup(cluster, "burst", receivers, a.worker_concurrency).await;
    let pg = process::postgres_cpu_seconds();
    let starts: Starts = Arc::default();
    let ingest = send_singles(&s.courier.base, &s.emitter, a.events, a.concurrency, "b", starts.clone()).await;
    let refs: Vec<&Receiver> = s.receivers.iter().collect();
    wait_for(&refs, a.events * a.webhooks, Duration::from_secs(a.stall_secs)).await;
    let result = merge(measure(&refs, &*starts.lock().await, a.events, ingest), resources(&s.courier, pg));
    s.teardown().await;
    merge(json!({"concurrency": a.concurrency, "webhooks": a.webhooks}), result)
}

async fn batch(cluster: &str, a: &Args) -> Value {
    let receivers: Vec<Receiver> = futures(a.webhooks, None).await;
    let s = setup(cluster, "batch", receivers, a.worker_concurrency).await;
    let pg = process::postgres_cpu_seconds();
    let starts: Starts = Arc::default();
    let ingest =
        send_batches(&s.courier.base, &s.emitter, a.batch_events, a.batch_size, a.batch_concurrency, starts.clone())
            .await;
    let refs: Vec<&Receiver> = s.receivers.iter().collect();
    wait_for(&refs, a.batch_events * a.webhooks, Duration::from_secs(a.stall_secs)).await;
    let result = merge(measure(&refs, &*starts.lock().await, a.batch_events, ingest), resources(&s.courier, pg));
    s.teardown().await;
    merge(json!({"batch_size": a.batch_size, "webhooks": a.webhooks}), result)
}

async fn rate(cluster: &str, a: &Args) -> Value {
    let receivers: Vec<Receiver> = futures(a.webhooks, None).await;
    let s = setup(cluster, "rate", receivers, a.worker_concurrency).await;
    let pg = process::postgres_cpu_seconds();
    let starts: Starts = Arc::default();
    let (events, ingest) = send_at_rate(&s.courier.base, &s.emitter, a.rate, a.seconds, starts.clone()).await;
    let refs: Vec<&Receiver> = s.receivers.iter().collect();
    wait_for(&refs, events * a.webhooks, Duration::from_secs(a.stall_secs)).await;
    let result = merge(measure(&refs, &*starts.lock().await, events, ingest), resources(&s.courier, pg));
    s.teardown().await;
    merge(json!({"rate": a.rate, "seconds": a.seconds}), result)
}

/// The healthy webhook alone, then beside one whose receiver never answers within the delivery timeout.
async fn fairness(cluster: &str, a: &Args) -> Value {
    let mut runs = Vec::new();
    for with_dead in [false, true] {
        let healthy = Receiver::start(None).await;
        let mut receivers = vec![healthy.clone()];
        if with_dead {
            receivers.push(Receiver::start(Some(Duration::from_secs(30))).await);
        }
        let s =
            setup(cluster, if with_dead { "fair_dead" } else { "fair_solo" }, receivers, a.worker_concurrency).await;
        let starts: Starts = Arc::default();
        let ingest =
            send_singles(&s.courier.base, &s.emitter, a.fairness_events, a.concurrency, "f", starts.clone()).await;
        wait_for(&[&healthy], a.fairness_events, Duration::from_secs(a.stall_secs)).await;
        runs.push(measure(&[&healthy], &*starts.lock().await, a.fairness_events, ingest));
        s.teardown().await;
    }
    let ratio =
        runs[1]["deliveries_per_s"].as_f64().unwrap_or(0.0) / runs[0]["deliveries_per_s"].as_f64().unwrap_or(f64::NAN);
    json!({"solo": runs[0], "beside_dead_webhook": runs[1], "healthy_throughput_ratio": ratio})
}

/// Another tenant of the same Courier with one emitter key and a webhook per receiver; returns the emitter key.
async fn add_tenant(s: &Setup, name: &str, receivers: &[&Receiver]) -> String {
    let tenant = cli(&s.url, &["tenants", "create", "--name", name, "--json"]);
    let tenant = tenant["id"].as_str().expect("tenant id");
    let key = |scopes: &str| {
        cli(&s.url, &["keys", "create", "--tenant", tenant, "--env", "test", "--scopes", scopes, "--json"])["key"]
            .as_str()
            .expect("key")
            .to_owned()
    };
    let admin = key("webhooks:write");
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    for r in receivers {
        let res = http
            .post(format!("{}/api/v1/webhooks", s.courier.base))
            .bearer_auth(&admin)
            .body(json!({"url": r.url}).to_string())
            .send()
            .await
            .expect("create webhook");
        assert_eq!(res.status().as_u16(), 201);
    }
    key("events:write")
}

/// Tenant B's healthy webhook alone, then while tenant A has four webhooks whose receivers never answer within
/// the delivery timeout and a backlog queued for them first.
async fn tenants(cluster: &str, a: &Args) -> Value {
    let healthy = Receiver::start(None).await;
    let s = setup(cluster, "ten_solo", vec![healthy.clone()], a.worker_concurrency).await;
    let starts: Starts = Arc::default();
    let ingest = send_singles(&s.courier.base, &s.emitter, a.fairness_events, a.concurrency, "t", starts.clone()).await;
    wait_for(&[&healthy], a.fairness_events, Duration::from_secs(a.stall_secs)).await;
    let solo = measure(&[&healthy], &*starts.lock().await, a.fairness_events, ingest);
    s.teardown().await;

    let hanging = futures(4, Some(Duration::from_secs(30))).await;
    let s = setup(cluster, "ten_hang", hanging, a.worker_concurrency).await;
    let healthy = Receiver::start(None).await;
    let b = add_tenant(&s, "healthy", &[&healthy]).await;
    send_singles(&s.courier.base, &s.emitter, a.hanging_events, a.concurrency, "h", Arc::default()).await;
    let starts: Starts = Arc::default();
    let ingest = send_singles(&s.courier.base, &b, a.fairness_events, a.concurrency, "t", starts.clone()).await;
    wait_for(&[&healthy], a.fairness_events, Duration::from_secs(a.stall_secs)).await;
    let contended = measure(&[&healthy], &*starts.lock().await, a.fairness_events, ingest);
    s.teardown().await;
    let ratio =
        contended["deliveries_per_s"].as_f64().unwrap_or(0.0) / solo["deliveries_per_s"].as_f64().unwrap_or(f64::NAN);
    json!({"solo": solo, "beside_hanging_tenant": contended, "hanging_webhooks": 4,
           "hanging_deliveries": a.hanging_events * 4, "healthy_throughput_ratio": ratio})
}

/// A tenant with `log_rows` finished deliveries over the last 30 days (ids carry their times, as real ones do;
/// 97 % succeeded, 2 % failed, 1 % cancelled, six event types, a call id shared by ten rows), then page requests
/// through the real API, timed per filter: the newest page and the pages after it, 40 requests each.
async fn logs(cluster: &str, a: &Args) -> Value {
    let receiver = Receiver::start(None).await;
    let s = setup(cluster, "logs", vec![receiver], a.worker_concurrency).await;
    send_singles(&s.courier.base, &s.emitter, 1, 1, "l", Arc::default()).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&s.url).await.expect("connect");
    let generated = Instant::now();
    // The id of unix millisecond `ms` with random bits `r`, in the shape of courier_id (and DeliveryId).
    sqlx::query(
        r#"CREATE FUNCTION pg_temp.bench_id(ms bigint, r bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$
            SELECT 'dlv_' || string_agg(substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ',
                       (CASE WHEN i < 10 THEN (ms >> (5 * (9 - i))) & 31 ELSE (r >> (5 * (25 - i))) & 31 END)::int + 1, 1),
                   '' ORDER BY i)
            FROM generate_series(0, 25) i $$"#,
    )
    .execute(&mut conn)
    .await
    .expect("function");
    let rows = a.log_rows as i64;
    sqlx::query(
        "INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status,
                                 attempt_count, max_attempts, created_at, updated_at)
         SELECT pg_temp.bench_id(t.ms, (random() * 1e15)::bigint), d.tenant_id, d.environment, d.event_id,
                d.webhook_id, (ARRAY['call.started','call.connected','call.completed','call.failed',
                                     'call.disconnected','call.agent.changed'])[1 + g % 6],
                'call-' || (g / 10), CASE WHEN g % 100 < 97 THEN 'succeeded' WHEN g % 100 < 99 THEN 'failed'
                                          ELSE 'cancelled' END,
                1, d.max_attempts, to_timestamp(t.ms / 1000.0), to_timestamp(t.ms / 1000.0)
         FROM (SELECT * FROM deliveries LIMIT 1) d, generate_series(1, $1) g,
              LATERAL (SELECT (extract(epoch FROM now() - interval '30 days') * 1000)::bigint
                              + g * (30 * 86400000::bigint / $1) AS ms) t",
    )
    .bind(rows)
    .execute(&mut conn)
    .await
    .expect("history");
    sqlx::query("VACUUM ANALYZE deliveries").execute(&mut conn).await.expect("analyze");
    let generate_s = generated.elapsed().as_secs_f64();
    let size: String = sqlx::query_scalar("SELECT pg_size_pretty(pg_total_relation_size('deliveries'))")
        .fetch_one(&mut conn)
        .await
        .expect("size");
    let admin = cli(
        &s.url,
        &["keys", "create", "--tenant", &tenant_of(&s.url), "--env", "test", "--scopes", "deliveries:read", "--json"],
    )["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let mid = chrono::Utc::now() - chrono::Duration::days(15);
    let filters = [
        ("none", String::new()),
        ("status=failed", "status=failed".to_owned()),
        ("status=cancelled", "status=cancelled".to_owned()),
        ("status=delivering", "status=delivering".to_owned()),
        ("event_type=call.failed", "event_type=call.failed".to_owned()),
        ("call_id", format!("call_id=call-{}", rows / 20)),
        (
            "since+until (1 h, 15 d ago)",
            format!(
                "since={}&until={}",
                mid.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                (mid + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ),
    ];
    let mut pages = serde_json::Map::new();
    for (name, query) in filters {
        let mut latencies = Vec::new();
        let mut returned = 0usize;
        let mut cursor: Option<String> = None;
        for _ in 0..40 {
            let mut url = format!("{}/api/v1/deliveries?limit=50&{query}", s.courier.base);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let begun = Instant::now();
            let res = http.get(url).bearer_auth(&admin).send().await.expect("page");
            assert_eq!(res.status().as_u16(), 200, "{name}");
            let page: Value = serde_json::from_str(&res.text().await.expect("body")).expect("json");
            latencies.push(begun.elapsed().as_secs_f64() * 1000.0);
            returned += page["data"].as_array().map_or(0, Vec::len);
            // At the end (no cursor) the next request starts again from the newest page.
            cursor = page["next_cursor"].as_str().map(str::to_owned);
        }
        latencies.sort_by(f64::total_cmp);
        pages.insert(
            name.to_owned(),
            json!({"p50_ms": percentile(&latencies, 50.0), "p99_ms": percentile(&latencies, 99.0),
                                             "rows_per_page": returned as f64 / latencies.len() as f64}),
        );
    }
    s.teardown().await;
    json!({"rows": rows, "generate_s": generate_s, "deliveries_size": size, "pages": pages})
}

/// The id of the benchmark's one tenant.
fn tenant_of(url: &str) -> String {
    // One JSON object a line; the benchmark's database holds one tenant.
    cli(url, &["tenants", "list", "--json"])["id"].as_str().expect("a tenant").to_owned()
}

/// The claim statement, timed by EXPLAIN ANALYZE (milliseconds), as the worker runs it.
async fn claim_cost(url: &str) -> f64 {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.expect("connect");
    let mut runs = Vec::new();
    for _ in 0..5 {
        let plan: Vec<String> = sqlx::query_scalar(
            "EXPLAIN (ANALYZE, FORMAT TEXT) SELECT id FROM deliveries
             WHERE due_at <= now() AND attempt_count < max_attempts AND webhook_id <> ALL ('{}'::text[])
               AND tenant_id <> ALL ('{}'::uuid[]) AND (attempt_count = 0 OR NOT false)
             ORDER BY due_at LIMIT 16 FOR UPDATE SKIP LOCKED",
        )
        .fetch_all(&mut conn)
        .await
        .expect("explain");
        let ms = plan
            .iter()
            .find_map(|l| {
                l.strip_prefix("Execution Time: ").and_then(|t| t.trim_end_matches(" ms").parse::<f64>().ok())
            })
            .unwrap_or(f64::NAN);
        runs.push(ms);
    }
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

/// Deliveries already pending (the API ran without workers), then one worker process starts and drains them.
/// Also times the claim query with no finished rows and with `finished_rows` of them.
async fn backlog(cluster: &str, a: &Args) -> Value {
    let receiver = Receiver::start(None).await;
    let s = setup_as(cluster, "backlog", vec![receiver.clone()], a.worker_concurrency, "api").await;
    let starts: Starts = Arc::default();
    send_batches(&s.courier.base, &s.emitter, a.backlog, 100, a.batch_concurrency, starts).await;
    let empty_cost = claim_cost(&s.url).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&s.url).await.expect("connect");
    // Finished rows copied from a pending one: they share its event and webhook, only their state differs.
    sqlx::query(
        "INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status,
                                 attempt_count, max_attempts, created_at)
         SELECT 'dlv_' || lpad(upper(to_hex(g)), 26, '0'), d.tenant_id, d.environment, d.event_id, d.webhook_id,
                d.event_type, d.call_id, 'succeeded', 1, d.max_attempts, now() - interval '1 day'
         FROM (SELECT * FROM deliveries LIMIT 1) d, generate_series(1, $1) g",
    )
    .bind(a.finished_rows as i64)
    .execute(&mut conn)
    .await
    .expect("finished rows");
    sqlx::query("ANALYZE deliveries").execute(&mut conn).await.expect("analyze");
    let full_cost = claim_cost(&s.url).await;
    let pg = process::postgres_cpu_seconds();
    let worker = Courier::start_as("worker", &s.url, 0, &s.secret_key, a.worker_concurrency).await;
    let begun = Instant::now();
    wait_for(&[&receiver], a.backlog, Duration::from_secs(a.stall_secs)).await;
    let drained = receiver.count();
    let elapsed = begun.elapsed().as_secs_f64();
    let result = json!({
        "pending": a.backlog,
        "drained": drained,
        "drain_deliveries_per_s": drained as f64 / elapsed,
        "missing": a.backlog.saturating_sub(drained),
        "claim_ms_no_finished_rows": empty_cost,
        "claim_ms_with_finished_rows": full_cost,
        "finished_rows": a.finished_rows,
        "worker_peak_rss_mib": process::peak_rss_mib(worker.pid()),
        "worker_cpu_s": process::cpu_seconds(worker.pid()),
        "postgres_cpu_s": process::postgres_cpu_seconds() - pg,
    });
    drop(worker);
    s.teardown().await;
    result
}

async fn futures(n: usize, hang: Option<Duration>) -> Vec<Receiver> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Receiver::start(hang).await);
    }
    out
}

fn row(name: &str, r: &Value) -> String {
    let f = |v: &Value| v.as_f64().map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".to_owned());
    format!(
        "{name:<10} {:>10} {:>12} {:>8} {:>8} {:>8} {:>8} {:>5} {:>5} {:>8} {:>8}",
        f(&r["ingest_events_per_s"]),
        f(&r["deliveries_per_s"]),
        f(&r["latency_ms"]["p50"]),
        f(&r["latency_ms"]["p90"]),
        f(&r["latency_ms"]["p99"]),
        f(&r["latency_ms"]["max"]),
        r["duplicates"],
        r["missing"],
        f(&r["courier_peak_rss_mib"]),
        f(&r["courier_cpu_s"]),
    )
}

fn main() {
    let mut args = Args::parse();
    if args.smoke {
        args = Args {
            events: 50,
            batch_events: 200,
            batch_size: 50,
            rate: 50,
            seconds: 1,
            fairness_events: 50,
            hanging_events: 20,
            log_rows: 20_000,
            backlog: 200,
            finished_rows: 1000,
            stall_secs: 10,
            ..args
        };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cluster = match std::env::var("DATABASE_URL") {
            Ok(url) => url,
            Err(_) => courier::embedded_db::EmbeddedDb::locate(std::path::Path::new(".courier"))
                .expect("PostgreSQL")
                .start()
                .await
                .expect("the embedded PostgreSQL starts"),
        };
        let wanted = |name: &str| args.scenario == "all" || args.scenario.split(',').any(|s| s == name);
        let mut results = serde_json::Map::new();
        if wanted("burst") {
            results.insert("burst".into(), burst(&cluster, &args).await);
        }
        if wanted("batch") {
            results.insert("batch".into(), batch(&cluster, &args).await);
        }
        if wanted("rate") {
            results.insert("rate".into(), rate(&cluster, &args).await);
        }
        if wanted("fairness") {
            results.insert("fairness".into(), fairness(&cluster, &args).await);
        }
        if wanted("tenants") {
            results.insert("tenants".into(), tenants(&cluster, &args).await);
        }
        if wanted("backlog") {
            results.insert("backlog".into(), backlog(&cluster, &args).await);
        }
        if args.scenario.split(',').any(|s| s == "logs") || (args.smoke && args.scenario == "all") {
            results.insert("logs".into(), logs(&cluster, &args).await);
        }
        eprintln!("{:<10} {:>10} {:>12} {:>8} {:>8} {:>8} {:>8} {:>5} {:>5} {:>8} {:>8}", "scenario", "ingest/s", "deliveries/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "dup", "miss", "RSS MiB", "CPU s");
        for (name, r) in &results {
            if name == "backlog" {
                eprintln!(
                    "backlog: drained {} of {} at {:.0} deliveries/s; claim {:.3} ms with no finished rows, {:.3} ms with {}",
                    r["drained"], r["pending"], r["drain_deliveries_per_s"].as_f64().unwrap_or(0.0),
                    r["claim_ms_no_finished_rows"].as_f64().unwrap_or(f64::NAN),
                    r["claim_ms_with_finished_rows"].as_f64().unwrap_or(f64::NAN), r["finished_rows"]
                );
            } else if name == "logs" {
                eprintln!("logs: {} deliveries of one tenant over 30 days; page latency through the API (ms):", r["rows"]);
                if let Some(filters) = r["pages"].as_object() {
                    for (filter, t) in filters {
                        eprintln!("  {filter:<28} p50 {:>7.1}  p99 {:>7.1}  rows/page {:>5.1}", t["p50_ms"].as_f64().unwrap_or(f64::NAN), t["p99_ms"].as_f64().unwrap_or(f64::NAN), t["rows_per_page"].as_f64().unwrap_or(0.0));
                    }
                }
            } else if name == "tenants" {
                eprintln!("{}", row("ten-solo", &r["solo"]));
                eprintln!("{}", row("ten-hang", &r["beside_hanging_tenant"]));
                eprintln!("tenants: tenant B's healthy webhook keeps {:.0} % of its solo throughput beside tenant A's {} hanging deliveries", r["healthy_throughput_ratio"].as_f64().unwrap_or(0.0) * 100.0, r["hanging_deliveries"]);
            } else if name == "fairness" {
                eprintln!("{}", row("fair-solo", &r["solo"]));
                eprintln!("{}", row("fair-dead", &r["beside_dead_webhook"]));
                eprintln!("fairness: healthy webhook keeps {:.0} % of its solo throughput", r["healthy_throughput_ratio"].as_f64().unwrap_or(0.0) * 100.0);
            } else {
                eprintln!("{}", row(name, r));
            }
        }
        let machine = json!({"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "os": std::env::consts::OS});
        println!("{}", json!({"machine": machine, "scenarios": results}));
        let failed = results.values().any(|r| r.get("missing").and_then(Value::as_u64).unwrap_or(0) > 0);
        if args.smoke && failed {
            eprintln!("smoke run lost deliveries");
            std::process::exit(1);
        }
    });
}

//! End-to-end load benchmark: a private PostgreSQL, Courier `serve` as a child process, fast local receivers,
//! load through the real HTTP API. Prints one JSON object on stdout and a table on stderr.
//!
//! `make bench` runs every scenario with the defaults; `cargo bench --bench load -- --help` lists the knobs.

#[allow(dead_code)] // The scenario starts plain brokers; the destination tests also start them with TLS.
#[path = "../../tests/it/brokers.rs"]
mod brokers;
mod compare;
mod destinations;
mod history;
mod kafka_ingest;
mod limited;
mod logs;
mod measure;
mod ordered;
#[allow(dead_code)] // The replica scenario starts a pair and reads its nodes; the tests use the rest.
#[path = "../../tests/it/pg_pair.rs"]
mod pg_pair;
mod pg_work;
mod portal;
mod process;
mod receiver;
mod replica;
mod report;
mod scaleout;
mod send;
mod setup;

use std::sync::Arc;

use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

use measure::{claim_cost, measure, merge, resources};
use process::{Courier, cli};
use receiver::Receiver;
use send::{Starts, send_at_rate, send_batches, send_singles, wait_for};
use setup::{Setup, cluster, setup, setup_as, start_receivers};

#[derive(Debug, Clone, Parser)]
#[command(about = "Courier's end-to-end load benchmark")]
struct Args {
    /// burst, batch, rate, fairness, tenants, limited, backlog, ordered, scaleout, brokers, kafka_ingest (comma-separated), or all; `logs`, `portal` and `history`
    /// (slow: they generate millions of rows) and `replica` (a cluster of its own) run only when named.
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
    /// limited: tenant A's deliveries queued behind a webhook limited to 1/s (tenant B sends at `rate` for `seconds`).
    #[arg(long, default_value_t = 20_000)]
    limited_backlog: usize,
    /// backlog: deliveries already pending when the workers start.
    #[arg(long, default_value_t = 100_000)]
    backlog: usize,
    /// backlog: finished deliveries added to measure the claim's cost against.
    #[arg(long, default_value_t = 1_000_000)]
    finished_rows: usize,
    /// ordered: calls of four events each, posted in order per call.
    #[arg(long, default_value_t = 2_000)]
    ordered_calls: usize,
    /// ordered: share of requests (percent) the receiver fails with 500.
    #[arg(long, default_value_t = 20)]
    ordered_fail_percent: u64,
    /// history: finished deliveries (with an attempt each) of 1,000 tenants over 30 days.
    #[arg(long, default_value_t = 10_000_000)]
    history_rows: usize,
    /// portal: finished deliveries of one tenant in the history the portal's pages are timed against.
    #[arg(long, default_value_t = 1_000_000)]
    portal_rows: usize,
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
    /// Also build this commit (in a worktree under target/compare) and run both builds alternately, `rounds`
    /// times each, printing this build's figures over the other's.
    #[arg(long)]
    compare: Option<String>,
    /// compare: rounds of each build.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

async fn burst(cluster: &str, a: &Args) -> Value {
    let receivers: Vec<Receiver> = start_receivers(a.webhooks, None).await;
    let s = setup(cluster, "burst", receivers, a.worker_concurrency).await;
    let (work, pg) = (pg_work::snapshot(&s.url).await, process::postgres_cpu_seconds());
    let starts: Starts = Arc::default();
    let ingest = send_singles(&s.courier.base, &s.emitter, a.events, a.concurrency, "b", starts.clone()).await;
    let refs: Vec<&Receiver> = s.receivers.iter().collect();
    wait_for(&refs, a.events * a.webhooks, Duration::from_secs(a.stall_secs)).await;
    let result = measure(&refs, &*starts.lock().await, a.events, ingest);
    let result = with_work(&s, result, &work, pg).await;
    s.teardown().await;
    merge(json!({"concurrency": a.concurrency, "webhooks": a.webhooks}), result)
}

/// `result` with the resources the scenario used and PostgreSQL's work per delivery since `work` was taken.
async fn with_work(s: &Setup, result: Value, work: &pg_work::Snapshot, pg_cpu: f64) -> Value {
    let delivered = result["deliveries_expected"].as_u64().unwrap_or(0) - result["missing"].as_u64().unwrap_or(0);
    let used = resources(&s.courier, pg_cpu);
    let cpu = used["courier_cpu_s"].as_f64().unwrap_or(0.0) + used["postgres_cpu_s"].as_f64().unwrap_or(0.0);
    let per = json!({"cpu_ms_per_delivery": cpu * 1000.0 / delivered.max(1) as f64});
    merge(merge(merge(result, used), per), pg_work::since(&s.url, work, delivered as usize).await)
}

async fn batch(cluster: &str, a: &Args) -> Value {
    let receivers: Vec<Receiver> = start_receivers(a.webhooks, None).await;
    let s = setup(cluster, "batch", receivers, a.worker_concurrency).await;
    let (work, pg) = (pg_work::snapshot(&s.url).await, process::postgres_cpu_seconds());
    let starts: Starts = Arc::default();
    let ingest =
        send_batches(&s.courier.base, &s.emitter, a.batch_events, a.batch_size, a.batch_concurrency, starts.clone())
            .await;
    let refs: Vec<&Receiver> = s.receivers.iter().collect();
    wait_for(&refs, a.batch_events * a.webhooks, Duration::from_secs(a.stall_secs)).await;
    let result = measure(&refs, &*starts.lock().await, a.batch_events, ingest);
    let result = with_work(&s, result, &work, pg).await;
    s.teardown().await;
    merge(json!({"batch_size": a.batch_size, "webhooks": a.webhooks}), result)
}

async fn rate(cluster: &str, a: &Args) -> Value {
    let receivers: Vec<Receiver> = start_receivers(a.webhooks, None).await;
    let s = setup(cluster, "rate", receivers, a.worker_concurrency).await;
    let (work, pg) = (pg_work::snapshot(&s.url).await, process::postgres_cpu_seconds());
    let starts: Starts = Arc::default();
    let (events, ingest) = send_at_rate(&s.courier.base, &s.emitter, a.rate, a.seconds, starts.clone()).await;
    let refs: Vec<&Receiver> = s.receivers.iter().collect();
    wait_for(&refs, events * a.webhooks, Duration::from_secs(a.stall_secs)).await;
    let result = measure(&refs, &*starts.lock().await, events, ingest);
    let result = with_work(&s, result, &work, pg).await;
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

    let hanging = start_receivers(4, Some(Duration::from_secs(30))).await;
    let s = setup(cluster, "ten_hang", hanging, a.worker_concurrency).await;
    let healthy = Receiver::start(None).await;
    let b = add_tenant(&s, "healthy", &[&healthy]).await;
    send_singles(&s.courier.base, &s.emitter, a.hanging_events, a.concurrency, "h", Arc::default()).await;
    let work = pg_work::snapshot(&s.url).await;
    let starts: Starts = Arc::default();
    let ingest = send_singles(&s.courier.base, &b, a.fairness_events, a.concurrency, "t", starts.clone()).await;
    wait_for(&[&healthy], a.fairness_events, Duration::from_secs(a.stall_secs)).await;
    let contended = measure(&[&healthy], &*starts.lock().await, a.fairness_events, ingest);
    let contended = merge(contended, pg_work::since(&s.url, &work, a.fairness_events).await);
    s.teardown().await;
    let ratio =
        contended["deliveries_per_s"].as_f64().unwrap_or(0.0) / solo["deliveries_per_s"].as_f64().unwrap_or(f64::NAN);
    json!({"solo": solo, "beside_hanging_tenant": contended, "hanging_webhooks": 4,
           "hanging_deliveries": a.hanging_events * 4, "healthy_throughput_ratio": ratio})
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

async fn scenario(name: &str, cluster: &str, args: &Args) -> Value {
    match name {
        "burst" => burst(cluster, args).await,
        "batch" => batch(cluster, args).await,
        "rate" => rate(cluster, args).await,
        "fairness" => fairness(cluster, args).await,
        "tenants" => tenants(cluster, args).await,
        "limited" => limited::limited(cluster, args).await,
        "backlog" => backlog(cluster, args).await,
        "ordered" => ordered::ordered(cluster, args).await,
        "scaleout" => scaleout::scaleout(cluster, args).await,
        "brokers" => destinations::brokers(cluster, args).await,
        "kafka_ingest" => kafka_ingest::kafka_ingest(cluster, args).await,
        other => panic!("no scenario {other}"),
    }
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
            limited_backlog: 200,
            log_rows: 20_000,
            portal_rows: 20_000,
            history_rows: 20_000,
            ordered_calls: 50,
            backlog: 200,
            finished_rows: 1000,
            stall_secs: 10,
            ..args
        };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cluster = cluster().await;
        if let Some(rev) = args.compare.clone() {
            return compare::run(&cluster, &args, &rev).await;
        }
        let results = run_all(&cluster, &args).await;
        report::print_table(&results);
        let machine = json!({"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "os": std::env::consts::OS});
        println!("{}", json!({"machine": machine, "scenarios": results}));
        let missing = |r: &Value| r.get("missing").and_then(Value::as_u64).unwrap_or(0) > 0;
        let per_destination = results.get("brokers").and_then(Value::as_object).into_iter().flat_map(|m| m.values());
        let failed = results.values().any(missing) || per_destination.into_iter().any(missing);
        // Two APIs and two workers with nothing failing: a second arrival of a delivery is a bug, not a retry.
        let repeated = results.get("scaleout").and_then(|r| r["duplicates"].as_u64()).unwrap_or(0) > 0;
        if args.smoke && (failed || repeated) {
            eprintln!("smoke run lost or repeated deliveries");
            std::process::exit(1);
        }
    });
}

/// Every scenario `args` names, in order.
async fn run_all(cluster: &str, args: &Args) -> serde_json::Map<String, Value> {
    let wanted = |name: &str| args.scenario == "all" || args.scenario.split(',').any(|s| s == name);
    let mut results = serde_json::Map::new();
    let all = [
        "burst",
        "batch",
        "rate",
        "fairness",
        "tenants",
        "limited",
        "backlog",
        "ordered",
        "scaleout",
        "brokers",
        "kafka_ingest",
    ];
    for name in all {
        if wanted(name) {
            results.insert(name.into(), scenario(name, cluster, args).await);
        }
    }
    // Ten million rows take minutes: only when asked for (the smoke run takes a small history).
    if args.scenario.split(',').any(|s| s == "logs") || (args.smoke && args.scenario == "all") {
        results.insert("logs".into(), logs::logs(cluster, args).await);
    }
    if args.scenario.split(',').any(|s| s == "history") || (args.smoke && args.scenario == "all") {
        results.insert("history".into(), history::history(cluster, args).await);
    }
    if args.scenario.split(',').any(|s| s == "portal") || (args.smoke && args.scenario == "all") {
        results.insert("portal".into(), portal::portal(cluster, args).await);
    }
    // A primary and a standby of its own (the cluster above has no standby).
    if args.scenario.split(',').any(|s| s == "replica") || (args.smoke && args.scenario == "all") {
        results.insert("replica".into(), replica::replica(args).await);
    }
    results
}

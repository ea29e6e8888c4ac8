//! The fault suite (`make chaos`): a release build of `courier api` and two `courier worker` processes on a private
//! PostgreSQL cluster, under steady load, while this harness `kill -9`s workers about every second, the API now and
//! then, crashes PostgreSQL once (`pg_ctl -m immediate`), and receivers fail a share of requests or answer in every
//! hostile way the hostile receiver knows, and restarts the Redis a third tenant's webhook publishes to; a fourth
//! tenant's events come through a Kafka topic, consumed by a `courier serve` the suite kills too. Then it waits for the queue to drain and checks the promise: no accepted
//! event lost, no delivery stuck, no 500, no attempt recorded twice. Everything runs on 127.0.0.1.
//!
//! `--failover` runs the failover suite instead (`failover.rs`): a primary and its standby, killed and promoted twice
//! under load.
//!
//! `--short` is the few-second version `make test` runs; `--report FILE` writes the figures as Markdown.

#[allow(dead_code)] // The suite restarts a Redis; the destination tests start every broker, with TLS too.
#[path = "../../tests/it/brokers.rs"]
mod brokers;
mod failover;
mod faults;
#[allow(dead_code)] // Some of the hostile receiver is only for the integration tests.
#[path = "../../tests/it/hostile_receiver.rs"]
mod hostile_receiver;
mod kafka;
#[allow(dead_code)] // The replica tests pause replay and reach single nodes; the failover suite does not.
#[path = "../../tests/it/pg_pair.rs"]
mod pg_pair;
#[allow(dead_code)] // Shared with the load benchmark, which measures more than this suite does.
#[path = "../load/process.rs"]
mod process;
mod traffic;
mod verdict;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Parser;
use serde_json::{Value, json};

use faults::{Cluster, Fleet};
use hostile_receiver::{Hostile, Mode};

use traffic::{Emitted, Flaky, Keys, tenant, tenant_with};
use verdict::markdown;

#[derive(Debug, Clone, Parser)]
#[command(about = "Courier's fault suite")]
pub struct Args {
    /// A few seconds and a few kills (make test).
    #[arg(long)]
    pub short: bool,
    /// Seconds of load and faults.
    #[arg(long, default_value_t = 45)]
    pub seconds: u64,
    /// Events per second offered.
    #[arg(long, default_value_t = 60)]
    pub rate: u64,
    /// Seconds between worker kills.
    #[arg(long, default_value_t = 1.0)]
    pub kill_every: f64,
    /// Share of requests the flaky receiver fails with 500.
    #[arg(long, default_value_t = 0.2)]
    pub fail_share: f64,
    /// Seed of the harness's choices (which worker, when), for a reproducible sequence.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Fail the database over twice (primary killed, standby promoted) instead of the suite's other faults.
    #[arg(long)]
    pub failover: bool,
    /// Write the figures here as Markdown.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Settings of every Courier process in the suite: short timeouts and retries so a run drains in seconds.
pub const SETTINGS: &[(&str, &str)] = &[
    ("COURIER_DELIVERY_TIMEOUT", "1s"),
    ("COURIER_CONNECT_TIMEOUT", "500ms"),
    ("COURIER_RETRY_INITIAL", "200ms"),
    ("COURIER_RETRY_MULTIPLIER", "2"),
    ("COURIER_RETRY_CAP", "2s"),
    ("COURIER_WEBHOOK_CONCURRENCY", "16"),
    ("COURIER_SHUTDOWN_TIMEOUT", "5s"),
    ("COURIER_DATABASE_MAX_CONNECTIONS", "10"),
    ("RUST_LOG", "off"),
];
pub const WORKER_CONCURRENCY: usize = 64;
const REDIS_PASSWORD: &str = "chaos-pw";

/// Where the broker tenant's webhook publishes: the suite's `redis-server`, with its password.
fn redis_url(redis: &brokers::Broker) -> String {
    format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}", redis.port)
}

async fn run(a: &Args) -> (Value, bool) {
    let cluster = Cluster::start().await;
    let mut fleet = Fleet::start(&cluster.url).await;
    let base = fleet.base();
    let flaky = Flaky::start(a.fail_share, std::time::Duration::ZERO).await;
    let main_key = tenant(&cluster.url, &base, "main", std::slice::from_ref(&flaky.url), 12).await;
    let mut hostiles = Vec::new();
    for mode in Mode::ALL {
        hostiles.push(Hostile::start(mode).await);
    }
    let hostile_urls: Vec<String> = hostiles.iter().map(|h| h.url.clone()).collect();
    let hostile_key = tenant(&cluster.url, &base, "hostile", &hostile_urls, 2).await;
    let mut redis = brokers::redis(REDIS_PASSWORD).await;
    let stream =
        json!({"destination": {"type": "redis", "url": redis_url(&redis), "stream": "calls"}, "max_attempts": 12});
    let broker_key = tenant_with(&cluster.url, &base, "broker", &[stream]).await;
    let mut kafka = kafka::KafkaIngest::start(&cluster.url, &base, fleet.secret(), &flaky.url).await;

    let emitted = Arc::new(Mutex::new(Emitted::default()));
    let keys = Keys { main: main_key, hostile: hostile_key, broker: broker_key };
    let load = traffic::start_load(a.rate, a.seconds, base, keys, emitted.clone());
    let produced = kafka.produce(a.rate, a.seconds);
    let begun = Instant::now();
    let (mut faults, ()) = tokio::join!(fleet.inject_faults(a, &cluster, &mut redis), kafka.kill_now_and_then(a));
    load.await.expect("the emitter finishes");
    let produced = produced.await.expect("the producer finishes");
    let load_elapsed = begun.elapsed();
    fleet.restart_exited(&mut faults).await;
    kafka.restart_exited().await;
    faults.ingest_kills = kafka.kills;

    // Drain with no faults, then count.
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&cluster.url).await.expect("connect");
    kafka::KafkaIngest::until_stored(&pool, &produced).await;
    let (live, drained_in) = verdict::drain(&pool, a.short).await;
    let streamed = verdict::streamed(&redis_url(&redis)).await;
    let run = verdict::Run {
        faults,
        emitted: std::mem::take(&mut *emitted.lock().expect("lock")),
        delivered: flaky.delivered.lock().expect("lock").clone(),
        streamed,
        produced,
        live,
        load: load_elapsed,
        drain: drained_in,
    };
    let (report, passed) = verdict::figures(a, &pool, run).await;
    drop(fleet);
    drop(kafka);
    pool.close().await;
    // The suite's cluster is its own: stop it, so nothing of the run outlives it.
    if let Err(err) = cluster.db.stop() {
        eprintln!("chaos: stopping the suite's PostgreSQL failed: {err:#}");
    }
    (report, passed)
}

fn main() {
    let mut args = Args::parse();
    if args.short {
        (args.seconds, args.rate) = if args.failover { (16, 30) } else { (6, 40) };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    if args.failover {
        let (report, passed) = runtime.block_on(async {
            let _ = rustls::crypto::ring::default_provider().install_default();
            failover::run(&args).await
        });
        finish_failover(&args, &report, passed);
        return;
    }
    let (report, passed) = runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        run(&args).await
    });
    println!("{report}");
    eprintln!(
        "chaos: {} accepted ({} through Kafka), {} lost, {} stuck, {} duplicates, {} worker kills, {} API kills, {} PostgreSQL crash(es), {} broker restart(s), {} consumer kill(s): {}",
        report["events_accepted"],
        report["events_produced_kafka"],
        report["lost"],
        report["stuck"],
        report["duplicates_delivered"],
        report["faults"]["worker_kills"],
        report["faults"]["api_kills"],
        report["faults"]["postgres_crashes"],
        report["faults"]["broker_restarts"],
        report["faults"]["ingest_kills"],
        if passed { "passed" } else { "FAILED" }
    );
    if let Some(path) = &args.report {
        let command = format!(
            "cargo bench --bench chaos -- --seconds {} --rate {} --seed {}",
            args.seconds, args.rate, args.seed
        );
        // The sections written by hand after the suite's own (from `## Neighbours` on) are kept as they are.
        let kept = std::fs::read_to_string(path)
            .ok()
            .and_then(|old| old.find("\n## Neighbours").map(|at| old[at..].to_owned()))
            .unwrap_or_default();
        std::fs::write(path, markdown(&report, &command) + &kept).expect("report written");
    }
    if !passed {
        std::process::exit(1);
    }
}

/// Prints the failover run, writes its section of the report, and exits non-zero when the promise broke.
fn finish_failover(args: &Args, report: &Value, passed: bool) {
    println!("{report}");
    eprintln!(
        "chaos failover: {} accepted, {} lost, {} stuck, {} duplicates, failovers {}: {}",
        report["events_accepted"],
        report["lost"],
        report["stuck"],
        report["duplicates_delivered"],
        report["failovers"],
        if passed { "passed" } else { "FAILED" }
    );
    if let Some(path) = &args.report {
        let command =
            format!("cargo bench --bench chaos -- --failover --seconds {} --rate {}", args.seconds, args.rate);
        let section = failover::markdown(report, &command);
        // The section replaces its previous self, or goes last: the main suite keeps everything from `## Neighbours`
        // on, so a section there survives its runs.
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let new = match old.find("\n## Failover") {
            Some(at) => {
                let rest = &old[at + 1..];
                let end = rest[1..].find("\n## ").map_or(old.len(), |e| at + 1 + 1 + e + 1);
                format!("{}\n{section}{}", &old[..at], &old[end.min(old.len())..])
            }
            None => format!("{}\n\n{section}", old.trim_end()),
        };
        std::fs::write(path, new).expect("report written");
    }
    if !passed {
        std::process::exit(1);
    }
}

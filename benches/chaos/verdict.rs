//! The verdict: drain the queue with no faults, then count what the promise is about (nothing accepted lost,
//! nothing stuck, no 5xx but 503, no attempt recorded twice, every broker tenant's event in its Redis stream) and
//! write it down.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::Args;
use crate::faults::Faults;
use crate::hostile_receiver::Mode;
use crate::traffic::{Emitted, Tenant};

/// Waits until nothing is pending or in flight (leases of killed workers run out first), within a budget; returns
/// what is still live and how long it took.
pub async fn drain(pool: &PgPool, short: bool) -> (i64, Duration) {
    let started = Instant::now();
    let budget = Duration::from_secs(if short { 60 } else { 120 });
    loop {
        let live: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status IN ('pending', 'delivering')")
            .fetch_one(pool)
            .await
            .expect("count");
        // Handed over by a `serve` and not written yet (a killed one's come back when their lease runs out).
        let live = live + courier_scheduler::queue::journal::unwritten(pool).await.expect("journal");
        if live == 0 || started.elapsed() > budget {
            return (live, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many entries of the broker tenant's stream carry each event id (read after the drain).
pub async fn streamed(url: &str) -> HashMap<String, usize> {
    use courier_worker::brokers::redis::{Connection, Reply};
    let loopback = courier_core::target::TargetPolicy::new(vec!["127.0.0.0/8".parse().expect("cidr")]);
    let mut reader = Connection::open(url, &loopback, Duration::from_secs(5)).await.expect("the suite's Redis");
    let Reply::Array(Some(entries)) = reader.command(&[b"XRANGE", b"calls", b"-", b"+"]).await.expect("XRANGE") else {
        panic!("XRANGE answers an array");
    };
    let mut by_event = HashMap::new();
    for entry in entries {
        let Reply::Array(Some(parts)) = entry else { continue };
        let Some(Reply::Array(Some(fields))) = parts.get(1) else { continue };
        let body = fields.chunks(2).find_map(|pair| match pair {
            [Reply::Bulk(Some(name)), Reply::Bulk(Some(value))] if name == b"body" => Some(value),
            _ => None,
        });
        let envelope: Value = body.and_then(|b| serde_json::from_slice(b).ok()).unwrap_or(Value::Null);
        if let Some(id) = envelope["event"]["id"].as_str() {
            *by_event.entry(id.to_owned()).or_default() += 1;
        }
    }
    by_event
}

/// Accepted events that are not stored, stored without deliveries, or never delivered (the main tenant's to its
/// receiver, the broker tenant's to its stream); and how many were accepted for the main tenant and the broker's.
async fn lost(pool: &PgPool, run: &Run) -> (i64, usize, usize) {
    let ids: Vec<&str> = run.emitted.accepted.iter().map(String::as_str).collect();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE id = ANY ($1)")
        .bind(&ids)
        .fetch_one(pool)
        .await
        .expect("count");
    let without_deliveries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events e WHERE e.id LIKE 'evt_chaos%'
            AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.tenant_id = e.tenant_id AND d.event_id = e.id)",
    )
    .fetch_one(pool)
    .await
    .expect("count");
    let of = |tenant: Tenant| ids.iter().filter(move |id| Tenant::of_event(id) == tenant);
    let main_missing = of(Tenant::Main).filter(|id| !run.delivered.contains_key(**id)).count();
    let broker_missing = of(Tenant::Broker).filter(|id| !run.streamed.contains_key(**id)).count();
    // A record the broker acknowledged is accepted: stored once, fanned out, delivered to the flaky receiver.
    let kafka_stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events e WHERE e.id = ANY ($1)
            AND EXISTS (SELECT 1 FROM deliveries d WHERE d.tenant_id = e.tenant_id AND d.event_id = e.id)",
    )
    .bind(&run.produced)
    .fetch_one(pool)
    .await
    .expect("count");
    let undelivered: Vec<&String> = run.produced.iter().filter(|id| !run.delivered.contains_key(id.as_str())).collect();
    let kafka_missing = run.produced.len() as i64 - kafka_stored + undelivered.len() as i64;
    if kafka_missing > 0 {
        eprintln!("chaos: Kafka events not delivered: {undelivered:?}; stored with deliveries: {kafka_stored}");
    }
    let main = of(Tenant::Main).map(|id| (*id).to_owned());
    let missing: Vec<String> =
        main.chain(run.produced.iter().cloned()).filter(|id| !run.delivered.contains_key(id.as_str())).collect();
    if !missing.is_empty() {
        let rows: Vec<(String, String, i32, Option<String>)> = sqlx::query_as(
            "SELECT d.event_id, d.status::text, d.attempt_count, d.last_error FROM deliveries d WHERE d.event_id = ANY ($1)",
        )
        .bind(&missing)
        .fetch_all(pool)
        .await
        .expect("deliveries");
        eprintln!("chaos: events not delivered to their receiver: {missing:?}; their deliveries: {rows:?}");
    }
    let lost =
        (ids.len() as i64 - stored) + without_deliveries + (main_missing + broker_missing) as i64 + kafka_missing;
    (lost, of(Tenant::Main).count(), of(Tenant::Broker).count())
}

/// The attempts counted on deliveries, the attempt rows recorded, and deliveries with more rows than attempts.
async fn attempts(pool: &PgPool) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT COALESCE(sum(d.attempt_count), 0)::int8, COALESCE(sum(a.n), 0)::int8,
                count(*) FILTER (WHERE a.n > d.attempt_count)
         FROM deliveries d
         LEFT JOIN (SELECT delivery_id, count(*) AS n FROM delivery_attempts GROUP BY delivery_id) a
                ON a.delivery_id = d.id",
    )
    .fetch_one(pool)
    .await
    .expect("attempts")
}

/// What the run did and whether the promise held.
pub struct Run {
    pub faults: Faults,
    pub emitted: Emitted,
    pub delivered: HashMap<String, usize>,
    /// Entries per event id in the broker tenant's Redis stream.
    pub streamed: HashMap<String, usize>,
    /// The Kafka tenant's events, as produced (acknowledged by the broker).
    pub produced: Vec<String>,
    pub live: i64,
    pub load: Duration,
    pub drain: Duration,
}

/// The report and whether it passed.
pub async fn figures(a: &Args, pool: &PgPool, run: Run) -> (Value, bool) {
    let (lost, main_accepted, broker_accepted) = lost(pool, &run).await;
    let Run { faults, emitted, delivered, streamed, produced, live, load, drain } = run;
    let duplicates: usize = delivered.values().map(|n| n - 1).sum();
    let broker_duplicates: usize = streamed.values().map(|n| n - 1).sum();
    let (attempt_counts, recorded, over_recorded) = attempts(pool).await;
    let by_status: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM deliveries GROUP BY status ORDER BY status")
            .fetch_all(pool)
            .await
            .expect("statuses");
    let server_errors: u64 =
        emitted.answers.iter().filter(|(s, _)| s.starts_with('5') && *s != "503").map(|(_, n)| n).sum();
    let min_kills = if a.short { 3 } else { 30 };
    let passed = lost == 0
        && live == 0
        && server_errors == 0
        && over_recorded == 0
        && emitted.abandoned == 0
        && faults.worker_kills >= min_kills
        && faults.postgres_crashes == 1
        && faults.broker_restarts == 1
        && faults.ingest_kills >= 1
        && !produced.is_empty();
    let report = json!({
        "seconds": a.seconds, "rate": a.rate, "seed": a.seed, "fail_share": a.fail_share,
        "load_seconds": load.as_secs_f64(), "drain_seconds": drain.as_secs_f64(),
        "faults": {"worker_kills": faults.worker_kills, "api_kills": faults.api_kills,
                   "postgres_crashes": faults.postgres_crashes, "hostile_receivers": Mode::ALL.len(),
                   "restarted_after_exit": faults.restarted_after_exit, "broker_restarts": faults.broker_restarts,
                   "ingest_kills": faults.ingest_kills},
        "events_accepted": emitted.accepted.len(),
        "events_accepted_main": main_accepted,
        "events_accepted_broker": broker_accepted,
        "events_produced_kafka": produced.len(),
        "broker_duplicates": broker_duplicates,
        "events_abandoned": emitted.abandoned,
        "lost": lost,
        "stuck": live,
        "deliveries_by_status": by_status.into_iter().collect::<BTreeMap<_, _>>(),
        "duplicates_delivered": duplicates,
        "duplicate_share": duplicates as f64 / delivered.len().max(1) as f64,
        "api_answers": emitted.answers,
        "server_errors": server_errors,
        "attempts": {"attempt_count_sum": attempt_counts, "recorded": recorded,
                     "unrecorded": attempt_counts - recorded, "deliveries_over_recorded": over_recorded},
        "passed": passed,
    });
    (report, passed)
}

// Long because it is one `format!` of the report, a line of the table per figure.
pub fn markdown(r: &Value, command: &str) -> String {
    let n = |v: &Value| v.to_string();
    let answers: Vec<String> =
        r["api_answers"].as_object().map(|m| m.iter().map(|(k, v)| format!("{k}: {v}")).collect()).unwrap_or_default();
    let statuses: Vec<String> = r["deliveries_by_status"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}: {v}")).collect())
        .unwrap_or_default();
    format!(
        "# Reliability\n\n\
         Written by the fault suite, `{command}` (`make chaos`), on a {cpus}-core machine. Reproduce it with that \
         command; `--seed` fixes the harness's choices, the machine's timing does the rest.\n\n\
         A release build of `courier api` and two `courier worker` processes ran on a private PostgreSQL 15 cluster \
         for {secs} s under {rate} events/s while the suite killed workers with `kill -9` about every second, killed \
         the API now and then, crashed PostgreSQL once (`pg_ctl -m immediate`) and restarted each. One tenant's \
         webhook failed {fail:.0} % of requests with 500 (12 attempts allowed); another tenant's events (one in ten) \
         fanned out to {hostile} hostile receivers (NUL and invalid UTF-8 bodies, 100 MB, a one-byte-a-second \
         trickle, silence, resets, closes, non-HTTP bytes, status 999, 302, a 300 KB header, broken chunking, a \
         false Content-Encoding, 410, 429 with Retry-After; 2 attempts allowed); a third tenant's events (one in ten) \
         went to a Redis stream (`XADD`, 12 attempts allowed) whose `redis-server` the suite killed once and \
         started again a second later; a fourth tenant's events went into a Kafka topic (Tansu, produced by aiokafka \
         with acks=all) consumed by a `courier serve` the suite killed with `kill -9` and started again. The emitter retried 503 and \
         connection errors with the same event id, as the integration guide says.\n\n\
         | figure | value |\n|---|---|\n\
         | worker kills (`kill -9`) | {wk} |\n| API kills (`kill -9`) | {ak} |\n| PostgreSQL crashes | {pc} |\n\
         | Redis restarts (`kill -9`, the broker tenant's stream) | {br} |\n\
         | Kafka consumer (`courier serve`) kills (`kill -9`) | {ik} |\n\
         | processes that exited by themselves (started while PostgreSQL was down) and were restarted | {rx} |\n\
         | events accepted | {acc} through the API (of them to the Redis stream: {bacc}), {kp} through Kafka |\n| events lost | **{lost}** |\n| deliveries stuck after the drain | **{stuck}** |\n\
         | deliveries by status | {statuses} |\n\
         | duplicates delivered (at least once) | {dup} ({dupshare:.2} % of delivered events); in the stream: {bdup} |\n\
         | API answers | {answers} |\n| API 5xx other than 503 | **{errors}** |\n\
         | attempts counted / on record | {ac} / {rec} (the {unrec} unrecorded were in flight in killed workers) |\n\
         | deliveries with more attempts on record than counted | {over} |\n\
         | load / drain | {load:.1} s / {drain:.1} s |\n\n\
         Verdict: {verdict}.\n",
        cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        secs = r["seconds"],
        rate = r["rate"],
        fail = r["fail_share"].as_f64().unwrap_or(0.0) * 100.0,
        hostile = r["faults"]["hostile_receivers"],
        wk = n(&r["faults"]["worker_kills"]),
        ak = n(&r["faults"]["api_kills"]),
        pc = n(&r["faults"]["postgres_crashes"]),
        br = n(&r["faults"]["broker_restarts"]),
        ik = n(&r["faults"]["ingest_kills"]),
        kp = n(&r["events_produced_kafka"]),
        bacc = n(&r["events_accepted_broker"]),
        bdup = n(&r["broker_duplicates"]),
        rx = n(&r["faults"]["restarted_after_exit"]),
        acc = n(&r["events_accepted"]),
        lost = n(&r["lost"]),
        stuck = n(&r["stuck"]),
        statuses = statuses.join(", "),
        dup = n(&r["duplicates_delivered"]),
        dupshare = r["duplicate_share"].as_f64().unwrap_or(0.0) * 100.0,
        answers = answers.join(", "),
        errors = n(&r["server_errors"]),
        ac = n(&r["attempts"]["attempt_count_sum"]),
        rec = n(&r["attempts"]["recorded"]),
        unrec = n(&r["attempts"]["unrecorded"]),
        over = n(&r["attempts"]["deliveries_over_recorded"]),
        load = r["load_seconds"].as_f64().unwrap_or(0.0),
        drain = r["drain_seconds"].as_f64().unwrap_or(0.0),
        verdict = if r["passed"] == true { "passed" } else { "FAILED" },
    )
}

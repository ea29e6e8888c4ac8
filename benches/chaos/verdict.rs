//! The verdict: drain the queue with no faults, then count what the promise is about (nothing accepted lost,
//! nothing stuck, no 5xx but 503, no attempt recorded twice) and write it down.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::Args;
use crate::faults::Faults;
use crate::hostile_receiver::Mode;
use crate::traffic::{Emitted, is_hostile};

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
        if live == 0 || started.elapsed() > budget {
            return (live, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Accepted events that are not stored, stored without deliveries, or (main tenant) never delivered.
async fn lost(pool: &PgPool, emitted: &Emitted, delivered: &HashMap<String, usize>) -> (i64, usize) {
    let ids: Vec<&str> = emitted.accepted.iter().map(String::as_str).collect();
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
    let main: Vec<&&str> = ids.iter().filter(|id| !is_hostile(id)).collect();
    let main_missing = main.iter().filter(|id| !delivered.contains_key(***id)).count();
    ((ids.len() as i64 - stored) + without_deliveries + main_missing as i64, main.len())
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
    pub live: i64,
    pub load: Duration,
    pub drain: Duration,
}

/// The report and whether it passed.
pub async fn figures(a: &Args, pool: &PgPool, run: Run) -> (Value, bool) {
    let Run { faults, emitted, delivered, live, load, drain } = run;
    let (lost, main_accepted) = lost(pool, &emitted, &delivered).await;
    let duplicates: usize = delivered.values().map(|n| n - 1).sum();
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
        && faults.postgres_crashes == 1;
    let report = json!({
        "seconds": a.seconds, "rate": a.rate, "seed": a.seed, "fail_share": a.fail_share,
        "load_seconds": load.as_secs_f64(), "drain_seconds": drain.as_secs_f64(),
        "faults": {"worker_kills": faults.worker_kills, "api_kills": faults.api_kills,
                   "postgres_crashes": faults.postgres_crashes, "hostile_receivers": Mode::ALL.len(),
                   "restarted_after_exit": faults.restarted_after_exit},
        "events_accepted": emitted.accepted.len(),
        "events_accepted_main": main_accepted,
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
         false Content-Encoding, 410, 429 with Retry-After; 2 attempts allowed). The emitter retried 503 and \
         connection errors with the same event id, as the integration guide says.\n\n\
         | figure | value |\n|---|---|\n\
         | worker kills (`kill -9`) | {wk} |\n| API kills (`kill -9`) | {ak} |\n| PostgreSQL crashes | {pc} |\n\
         | processes that exited by themselves (started while PostgreSQL was down) and were restarted | {rx} |\n\
         | events accepted | {acc} |\n| events lost | **{lost}** |\n| deliveries stuck after the drain | **{stuck}** |\n\
         | deliveries by status | {statuses} |\n\
         | duplicates delivered (at least once) | {dup} ({dupshare:.2} % of delivered events) |\n\
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

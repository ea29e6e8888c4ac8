//! The failover run (`--failover`): `courier serve` and a separate `courier worker` on a primary and its
//! synchronous standby (`DATABASE_URL` lists both), under steady load with a flaky receiver. The primary's postmaster
//! is killed (`kill -9`) and the standby promoted; the old primary comes back as the new one's standby from a fresh
//! base backup, and a second failover goes back. Then the queue drains and the promise is checked: every event
//! answered 2xx delivered, none stuck, no 5xx but 503, and the API back within 10 s of each promotion.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::pg_pair::Pair;
use crate::process::Courier;
use crate::traffic::{self, Emitted, Flaky, tenant};
use crate::{Args, SETTINGS, WORKER_CONCURRENCY};

/// How long the harness leaves the cluster without a primary before it promotes the standby: first as a failover
/// manager that waits out a missed health check or two; then longer than the API would wait for a connection (5 s), so
/// requests meet the outage and are answered 503 with `Retry-After`.
const WITHOUT_PRIMARY: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(12)];
/// The promise on recovery: the API accepts events again within this of a promotion.
const RECOVER_WITHIN: Duration = Duration::from_secs(10);

/// One failover as the harness saw it.
struct Failover {
    without_primary: Duration,
    recovered_after_promotion: Option<Duration>,
    reattached_in: Duration,
}

/// Kills the primary, promotes the standby, waits for the API to accept an event again (the probe is an event
/// like any other), then attaches the old primary as the new one's standby.
async fn fail_over(pair: &mut Pair, api: &str, key: &str, emitted: &Arc<Mutex<Emitted>>, n: usize) -> Failover {
    let killed = Instant::now();
    pair.kill_primary();
    tokio::time::sleep(WITHOUT_PRIMARY[n]).await;
    pair.promote_standby().await;
    let promoted = Instant::now();
    let without_primary = promoted - killed;
    let http = traffic::http();
    let mut recovered_after_promotion = None;
    let mut probe = 0;
    while promoted.elapsed() < RECOVER_WITHIN * 3 {
        let id = format!("evt_probe{n}_{probe}");
        probe += 1;
        let body = json!({"id": id, "type": "call.completed", "data": {"call_id": format!("call-{id}")}});
        let answer = http
            .post(format!("{api}/api/v1/events"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(2))
            .body(body.to_string())
            .send()
            .await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            recovered_after_promotion = Some(promoted.elapsed());
            emitted.lock().expect("lock").accepted.insert(id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let begun = Instant::now();
    pair.reattach_old_primary().await;
    Failover { without_primary, recovered_after_promotion, reattached_in: begun.elapsed() }
}

/// The deliveries leased at this moment (by either process): claimed, or handed over by `serve` and not written
/// yet (in its journal).
async fn leased(url: &str) -> Vec<String> {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.expect("connect to the primary");
    sqlx::query_scalar(
        "SELECT id FROM deliveries WHERE status = 'delivering'
         UNION ALL
         SELECT x.id FROM delivery_handovers h, unnest(h.delivery_ids) AS x(id)
          WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = x.id)",
    )
    .fetch_all(&mut conn)
    .await
    .expect("leased deliveries")
}

/// Accepted events the receiver never got, duplicates it got, and of the deliveries leased when the worker died
/// with the primary, how many are still live after the drain (their leases must expire and another worker claim
/// them to the end).
async fn verdict(pool: &sqlx::PgPool, emitted: &Emitted, flaky: &Flaky, leased: &[String]) -> (usize, i64, i64) {
    let delivered = flaky.delivered.lock().expect("lock").clone();
    let lost = emitted.accepted.iter().filter(|id| !delivered.contains_key(*id)).count();
    let duplicates: usize = delivered.values().map(|n| n - 1).sum();
    let unfinished: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM deliveries WHERE id = ANY ($1) AND status IN ('waiting', 'pending', 'delivering'))
              + (SELECT count(*) FROM delivery_handovers h, unnest(h.delivery_ids) AS x(id)
                  WHERE x.id = ANY ($1) AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = x.id))",
    )
    .bind(leased)
    .fetch_one(pool)
    .await
    .expect("count");
    (lost, duplicates as i64, unfinished)
}

// Long because it is the run's one timeline: start, two failovers under load, drain, verdict.
pub async fn run(a: &Args) -> (Value, bool) {
    let mut pair = Pair::start("chaos-failover").await;
    let url = pair.url();
    let secret = courier_core::MasterKey::generate_base64();
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let serve = Courier::start_with("serve", &url, port, &secret, WORKER_CONCURRENCY, SETTINGS).await;
    let mut worker = Courier::start_with("worker", &url, 0, &secret, WORKER_CONCURRENCY, SETTINGS).await;
    let base = serve.base.clone();
    // Each answer takes 200 ms, so every worker holds deliveries in flight when the harness strikes.
    let flaky = Flaky::start(a.fail_share, Duration::from_millis(200)).await;
    let key = tenant(&url, &base, "main", std::slice::from_ref(&flaky.url), 12).await;

    let emitted = Arc::new(Mutex::new(Emitted::default()));
    // Every event to the one tenant (the "hostile" share of the main suite's emitter goes there too).
    let keys = traffic::Keys { main: key.clone(), hostile: key.clone(), broker: key.clone() };
    let load = traffic::start_load(a.rate, a.seconds, base.clone(), keys, emitted.clone());
    let begun = Instant::now();
    let mut failovers = Vec::new();
    let mut restarted = 0;
    let mut leased_at_kill = Vec::new();
    for (n, at) in [0.2, 0.5].into_iter().enumerate() {
        let when = Duration::from_secs_f64(a.seconds as f64 * at);
        tokio::time::sleep(when.saturating_sub(begun.elapsed())).await;
        if n == 0 {
            // The first failover takes the worker's machine with it: its leases, on the promoted standby now, must
            // expire and be claimed again.
            worker.kill();
            leased_at_kill = leased(&pair.node_url(pair.primary())).await;
            worker = Courier::start_with("worker", &url, 0, &secret, WORKER_CONCURRENCY, SETTINGS).await;
        }
        failovers.push(fail_over(&mut pair, &base, &key, &emitted, n).await);
        // A process that ended by itself is started again, as its supervisor would.
        if worker.has_exited() {
            worker = Courier::start_with("worker", &url, 0, &secret, WORKER_CONCURRENCY, SETTINGS).await;
            restarted += 1;
        }
    }
    load.await.expect("the emitter finishes");
    let load_elapsed = begun.elapsed();

    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&pair.node_url(pair.primary()))
        .await
        .expect("connect to the primary");
    let (live, drained_in) = crate::verdict::drain(&pool, a.short).await;
    let emitted = std::mem::take(&mut *emitted.lock().expect("lock"));
    let (lost, duplicates, unfinished) = verdict(&pool, &emitted, &flaky, &leased_at_kill).await;
    let server_errors: u64 =
        emitted.answers.iter().filter(|(s, _)| s.starts_with('5') && *s != "503").map(|(_, n)| n).sum();
    let recovered = failovers.iter().all(|f| f.recovered_after_promotion.is_some_and(|d| d <= RECOVER_WITHIN));
    let passed = lost == 0 && live == 0 && server_errors == 0 && emitted.abandoned == 0 && recovered && unfinished == 0;
    drop((serve, worker));
    pool.close().await;
    let failovers: Vec<Value> = failovers
        .iter()
        .map(|f| {
            json!({"without_primary_seconds": f.without_primary.as_secs_f64(),
                   "recovered_after_promotion_seconds": f.recovered_after_promotion.map(|d| d.as_secs_f64()),
                   "standby_reattached_seconds": f.reattached_in.as_secs_f64()})
        })
        .collect();
    let report = json!({
        "scenario": "failover", "seconds": a.seconds, "rate": a.rate, "fail_share": a.fail_share,
        "load_seconds": load_elapsed.as_secs_f64(), "drain_seconds": drained_in.as_secs_f64(),
        "failovers": failovers,
        "events_accepted": emitted.accepted.len(),
        "events_abandoned": emitted.abandoned,
        "lost": lost,
        "stuck": live,
        "duplicates_delivered": duplicates,
        "duplicate_share": duplicates as f64 / emitted.accepted.len().max(1) as f64,
        "leased_when_the_worker_died": leased_at_kill.len(),
        "of_which_unfinished": unfinished,
        "workers_restarted": restarted,
        "api_answers": emitted.answers,
        "server_errors": server_errors,
        "passed": passed,
    });
    (report, passed)
}

/// The run as RELIABILITY.md's "Failover" section.
pub fn markdown(r: &Value, command: &str) -> String {
    let down = format!("{} s, then {} s", WITHOUT_PRIMARY[0].as_secs(), WITHOUT_PRIMARY[1].as_secs());
    let answers: Vec<String> =
        r["api_answers"].as_object().map(|m| m.iter().map(|(k, v)| format!("{k}: {v}")).collect()).unwrap_or_default();
    let rows: Vec<String> = r["failovers"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .enumerate()
                .map(|(i, f)| {
                    format!(
                        "| {} | {:.2} s | {} | {:.1} s |",
                        i + 1,
                        f["without_primary_seconds"].as_f64().unwrap_or(0.0),
                        f["recovered_after_promotion_seconds"]
                            .as_f64()
                            .map_or_else(|| "**never**".to_owned(), |s| format!("{s:.2} s")),
                        f["standby_reattached_seconds"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "## Failover\n\n\
         Written by `{command}` (`make chaos`). `courier serve` and a separate `courier worker` ran on a primary and \
         its synchronous streaming standby (PostgreSQL 15, `synchronous_standby_names = '*'`; `DATABASE_URL` lists \
         both hosts) for {secs} s under {rate} events/s, the receiver failing {fail:.0} % of requests with 500. Twice \
         the suite killed the primary's postmaster (`kill -9`), promoted the standby (`pg_ctl promote`) after {down} \
         (the first time with the worker killed too, as if on the same machine), probed the API with events until one was accepted, and attached the old primary as the new one's \
         standby from a fresh base backup (`pg_basebackup`); the second failover went back.\n\n\
         | failover | without a primary (kill to promotion) | API accepting again after the promotion | old primary \
         reattached as standby in |\n|---|---|---|---|\n{rows}\n\n\
         | figure | value |\n|---|---|\n\
         | events accepted | {acc} |\n| events lost | **{lost}** |\n| deliveries stuck after the drain | **{stuck}** \
         |\n| duplicates delivered | {dup} ({share:.2} % of accepted events) |\n\
         | deliveries in flight when the worker died with the primary (claimed, or handed over by `serve` and not written yet) / of them still live after the drain | {lease} / \
         {unfinished} |\n\
         | API answers | {answers} |\n| API 5xx other than 503 | **{errors}** |\n\
         | load / drain | {load:.1} s / {drain:.1} s |\n\n\
         Verdict: {verdict}.\n",
        secs = r["seconds"],
        rate = r["rate"],
        fail = r["fail_share"].as_f64().unwrap_or(0.0) * 100.0,
        down = down,
        rows = rows.join("\n"),
        acc = r["events_accepted"],
        lost = r["lost"],
        stuck = r["stuck"],
        dup = r["duplicates_delivered"],
        share = r["duplicate_share"].as_f64().unwrap_or(0.0) * 100.0,
        lease = r["leased_when_the_worker_died"],
        unfinished = r["of_which_unfinished"],
        answers = answers.join(", "),
        errors = r["server_errors"],
        load = r["load_seconds"].as_f64().unwrap_or(0.0),
        drain = r["drain_seconds"].as_f64().unwrap_or(0.0),
        verdict = if r["passed"] == true { "passed" } else { "FAILED" },
    )
}

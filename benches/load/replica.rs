//! The `replica` scenario: a burst of single events while readers page through the delivery log (the API's and the
//! portal's), with the reads on the primary, then on a streaming replica (`COURIER_READ_DATABASE_URL`); a primary and standby of its own.
//! What it shows: the primary's CPU per delivery and the burst's deliveries/s with and without the readers' load on
//! the primary, and what the reads cost and took on each.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Args;
use crate::logs::{reader_key, tenant_of};
use crate::measure::{measure, percentile};
use crate::pg_pair::Pair;
use crate::process::cli;
use crate::receiver::Receiver;
use crate::send::{Starts, send_singles, wait_for};
use crate::setup::{database_name, setup_with};

/// Concurrent readers during the burst, as many as one tenant may run at once: two page through the API's delivery
/// log, two through the portal's log and overview.
const API_READERS: usize = 2;
const PORTAL_READERS: usize = 2;
/// The portal's pages a portal reader takes in turn.
const PORTAL_PAGES: [&str; 2] = ["/portal/deliveries", "/portal"];

/// Rounds of each placement, alternating, so neither always runs on a warmer cache.
const ROUNDS: usize = 2;

pub async fn replica(a: &Args) -> Value {
    let pair = Pair::start("bench-replica").await;
    let mut rounds: Vec<Value> = Vec::new();
    for n in 0..ROUNDS {
        let order = if n % 2 == 0 { ["primary", "replica"] } else { ["replica", "primary"] };
        for reads in order {
            rounds.push(round(&pair, reads, &format!("{reads}{n}"), a).await);
        }
    }
    let mut out = serde_json::Map::new();
    for reads in ["primary", "replica"] {
        let mine: Vec<&Value> = rounds.iter().filter(|r| r["reads_on"] == reads).collect();
        out.insert(reads.to_owned(), mean(&mine));
    }
    out.insert("rounds".to_owned(), Value::Array(rounds.clone()));
    let ratio = |key: &str| {
        let (r, p) =
            (out["replica"][key].as_f64().unwrap_or(f64::NAN), out["primary"][key].as_f64().unwrap_or(f64::NAN));
        r / p
    };
    let ratios = json!({
        "deliveries_per_s": ratio("deliveries_per_s"),
        "primary_cpu_ms_per_delivery": ratio("primary_cpu_ms_per_delivery"),
        "read_pages": ratio("read_pages"),
        "portal_pages": ratio("portal_pages"),
    });
    out.insert("replica_over_primary".to_owned(), ratios);
    Value::Object(out)
}

/// The mean of every numeric figure of `rounds` (one placement's).
fn mean(rounds: &[&Value]) -> Value {
    let keys = [
        "deliveries_per_s",
        "primary_cpu_ms_per_delivery",
        "standby_cpu_ms_per_delivery",
        "read_p50_ms",
        "read_p99_ms",
        "portal_p50_ms",
        "portal_p99_ms",
    ];
    let mut out = serde_json::Map::new();
    for key in keys.iter().chain(["read_pages", "portal_pages"].iter()) {
        let sum: f64 = rounds.iter().map(|r| r[*key].as_f64().unwrap_or(f64::NAN)).sum();
        out.insert((*key).to_owned(), json!(sum / rounds.len().max(1) as f64));
    }
    let p50: f64 = rounds.iter().map(|r| r["latency_ms"]["p50"].as_f64().unwrap_or(f64::NAN)).sum();
    out.insert("delivery_p50_ms".to_owned(), json!(p50 / rounds.len().max(1) as f64));
    Value::Object(out)
}

/// CPU seconds of one PostgreSQL server: its postmaster and every process it runs, with the children it reaped.
fn server_cpu_seconds(postmaster: u32) -> f64 {
    let stat = |pid: u32| -> Option<(u32, f64)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
        // After the state: ppid is field 1; utime, stime, cutime, cstime are 11 to 14.
        Some((ticks(1) as u32, (ticks(11) + ticks(12) + ticks(13) + ticks(14)) / 100.0))
    };
    let children: f64 = std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(stat)
                .filter(|(ppid, _)| *ppid == postmaster)
                .map(|(_, cpu)| cpu)
                .sum()
        })
        .unwrap_or(0.0);
    children + stat(postmaster).map_or(0.0, |(_, cpu)| cpu)
}

// Long because a round is one measurement: setup, readers beside the burst, both servers' CPU, the figures.
async fn round(pair: &Pair, reads: &str, name: &str, a: &Args) -> Value {
    let name = format!("replica_{name}");
    let standby = pair.node_url(pair.standby());
    let (prefix, _) = standby.rsplit_once('/').expect("a database");
    let read_url = format!("{prefix}/{}", database_name(&name));
    let mut settings = vec![("COURIER_READ_MAX_LAG", "5s")];
    if reads == "replica" {
        settings.push(("COURIER_READ_DATABASE_URL", read_url.as_str()));
    }
    let receiver = Receiver::start(None).await;
    let s = setup_with(&pair.node_url(pair.primary()), &name, vec![receiver], a.worker_concurrency, "serve", &settings)
        .await;
    let reader_key = reader_key(&s.url);
    let pids = |i: usize| pair.node(i).postmaster_pid().expect("a running server");
    let (primary_pid, standby_pid) = (pids(pair.primary()), pids(pair.standby()));
    let cpu_before = (server_cpu_seconds(primary_pid), server_cpu_seconds(standby_pid));

    let http =
        reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let scopes = "webhooks:read,webhooks:write,deliveries:read,deliveries:replay";
    let args = ["keys", "create", "--tenant", &tenant_of(&s.url), "--env", "test", "--scopes", scopes, "--json"];
    let portal_key = cli(&s.url, &args)["key"].as_str().expect("key").to_owned();
    let cookie = crate::portal::sign_in(&http, &s.courier.base, &portal_key).await;
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..API_READERS)
        .map(|_| tokio::spawn(read_pages(s.courier.base.clone(), reader_key.clone(), stop.clone())))
        .collect();
    let portal_readers: Vec<_> = (0..PORTAL_READERS)
        .map(|_| tokio::spawn(read_portal(http.clone(), s.courier.base.clone(), cookie.clone(), stop.clone())))
        .collect();
    let starts: Starts = Arc::default();
    let ingest = send_singles(&s.courier.base, &s.emitter, a.events, a.concurrency, "r", starts.clone()).await;
    let refs: Vec<&Receiver> = s.receivers.iter().collect();
    wait_for(&refs, a.events, Duration::from_secs(a.stall_secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for reader in readers {
        latencies.extend(reader.await.expect("a reader"));
    }
    latencies.sort_by(f64::total_cmp);
    let mut portal = Vec::new();
    for reader in portal_readers {
        portal.extend(reader.await.expect("a portal reader"));
    }
    portal.sort_by(f64::total_cmp);
    let result = measure(&refs, &*starts.lock().await, a.events, ingest);
    let delivered = (a.events as u64).saturating_sub(result["missing"].as_u64().unwrap_or(0)).max(1) as f64;
    let primary_cpu = server_cpu_seconds(primary_pid) - cpu_before.0;
    let standby_cpu = server_cpu_seconds(standby_pid) - cpu_before.1;
    s.teardown().await;
    json!({
        "reads_on": reads,
        "deliveries_per_s": result["deliveries_per_s"],
        "latency_ms": result["latency_ms"],
        "missing": result["missing"],
        "primary_cpu_ms_per_delivery": primary_cpu * 1000.0 / delivered,
        "standby_cpu_ms_per_delivery": standby_cpu * 1000.0 / delivered,
        "read_pages": latencies.len(),
        "read_p50_ms": percentile(&latencies, 50.0),
        "read_p99_ms": percentile(&latencies, 99.0),
        "portal_pages": portal.len(),
        "portal_p50_ms": percentile(&portal, 50.0),
        "portal_p99_ms": percentile(&portal, 99.0),
    })
}

/// Pages of 50 through the delivery log, newest first and following cursors, until `stop`; their latencies (ms).
async fn read_pages(base: String, key: String, stop: Arc<AtomicBool>) -> Vec<f64> {
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let mut latencies = Vec::new();
    let mut cursor: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let mut url = format!("{base}/api/v1/deliveries?limit=50");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let begun = Instant::now();
        let Ok(res) = http.get(url).bearer_auth(&key).send().await else { continue };
        assert_eq!(res.status().as_u16(), 200, "a log page");
        let page: Value = serde_json::from_str(&res.text().await.expect("body")).expect("json");
        latencies.push(begun.elapsed().as_secs_f64() * 1000.0);
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    latencies
}

/// The portal's log and overview in turn, signed in with `cookie`, until `stop`; their latencies (ms).
async fn read_portal(http: reqwest::Client, base: String, cookie: String, stop: Arc<AtomicBool>) -> Vec<f64> {
    let mut latencies = Vec::new();
    for path in PORTAL_PAGES.iter().cycle() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let begun = Instant::now();
        let Ok(res) = http.get(format!("{base}{path}")).header("cookie", &cookie).send().await else { continue };
        assert_eq!(res.status().as_u16(), 200, "{path}");
        let _ = res.bytes().await;
        latencies.push(begun.elapsed().as_secs_f64() * 1000.0);
    }
    latencies
}

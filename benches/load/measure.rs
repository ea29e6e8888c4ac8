//! What a scenario measured: throughput, latency percentiles, duplicates and misses, and the resources used.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::process::{self, Courier};
use crate::receiver::Receiver;

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Throughput, latency, duplicates and missing deliveries from what the receivers saw.
pub fn measure(receivers: &[&Receiver], starts: &HashMap<String, Instant>, events: usize, ingest: Duration) -> Value {
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

pub fn resources(courier: &Courier, pg_before: f64) -> Value {
    json!({
        "courier_peak_rss_mib": process::peak_rss_mib(courier.pid()),
        "courier_cpu_s": process::cpu_seconds(courier.pid()),
        "postgres_cpu_s": process::postgres_cpu_seconds() - pg_before,
    })
}

pub fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// The claim statement, timed by EXPLAIN ANALYZE (milliseconds), as the worker runs it.
pub async fn claim_cost(url: &str) -> f64 {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.expect("connect");
    let mut runs = Vec::new();
    for _ in 0..5 {
        let plan: Vec<String> = sqlx::query_scalar(
            "EXPLAIN (ANALYZE, FORMAT TEXT) SELECT c.id FROM deliveries_live c
             WHERE c.due_at <= now() AND c.attempt_count < c.max_attempts AND c.webhook_id <> ALL ('{}'::text[])
               AND c.tenant_id <> ALL ('{}'::uuid[]) AND (c.attempt_count = 0 OR NOT false)
               AND (c.call_seq IS NULL OR NOT EXISTS (
                     SELECT 1 FROM deliveries_live p
                      WHERE p.webhook_id = c.webhook_id AND p.call_id = c.call_id AND p.call_seq IS NOT NULL
                        AND p.call_seq < c.call_seq AND p.status = ANY ('{waiting,pending,delivering}')))
             ORDER BY c.due_at LIMIT 16 FOR UPDATE SKIP LOCKED",
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

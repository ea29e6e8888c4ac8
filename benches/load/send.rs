//! Load through the real API: single events, batches, a fixed rate; and waiting until the receivers saw it all.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::receiver::Receiver;

/// Send-start time of every event, by its numeric suffix.
pub type Starts = Arc<Mutex<HashMap<String, Instant>>>;

pub fn event(id: &str) -> Value {
    json!({"id": id, "type": "call.completed",
           "data": {"call_id": id, "status": "completed", "duration_seconds": 180, "user_id": "user-123",
                    "transcript": [{"role": "assistant", "content": "Hello!"}], "metrics": {"message_count": 15}}})
}

/// Sends `count` events through the single-event endpoint, `concurrency` at a time.
pub async fn send_singles(
    base: &str,
    key: &str,
    count: usize,
    concurrency: usize,
    tag: &str,
    starts: Starts,
) -> Duration {
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

pub async fn send_batches(
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

pub async fn send_at_rate(base: &str, key: &str, rate: u64, seconds: u64, starts: Starts) -> (usize, Duration) {
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
pub async fn wait_for(receivers: &[&Receiver], expected: usize, stall: Duration) {
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

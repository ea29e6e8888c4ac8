//! The suite's traffic: a flaky receiver for the main tenant, the tenants themselves, and an emitter that posts
//! events the way the integration guide tells clients to.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::process::cli;

/// A small deterministic generator (xorshift), so a seed replays the same sequence of choices.
pub struct Dice(pub u64);

impl Dice {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The receiver of the main tenant: fails a share of requests with 500 and records, per event id, the requests it
/// answered 200.
#[derive(Clone)]
pub struct Flaky {
    pub url: String,
    pub delivered: Arc<Mutex<HashMap<String, usize>>>,
}

#[derive(Clone)]
struct FlakyState {
    delivered: Arc<Mutex<HashMap<String, usize>>>,
    fail_share: f64,
    /// How long each answer takes.
    delay: Duration,
    counter: Arc<AtomicU64>,
}

async fn flaky(State(state): State<FlakyState>, body: Bytes) -> StatusCode {
    let n = state.counter.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(state.delay).await;
    // A fixed pattern of failures, spread evenly: n * golden ratio mod 1.
    if ((n as f64) * 0.618_033_988_75).fract() < state.fail_share {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let envelope: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Some(id) = envelope["event"]["id"].as_str() {
        *state.delivered.lock().expect("lock").entry(id.to_owned()).or_default() += 1;
    }
    StatusCode::OK
}

impl Flaky {
    /// Answers after `delay` (zero: at once).
    pub async fn start(fail_share: f64, delay: Duration) -> Self {
        let delivered = Arc::new(Mutex::new(HashMap::new()));
        let state = FlakyState { delivered: delivered.clone(), fail_share, delay, counter: Arc::default() };
        let app = Router::new().fallback(flaky).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        Self { url: format!("http://{addr}/hook"), delivered }
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().expect("client")
}

/// A tenant with an emitter key and one webhook per URL (each with `max_attempts`).
pub async fn tenant(db: &str, api: &str, name: &str, urls: &[String], max_attempts: u32) -> String {
    let webhooks: Vec<Value> = urls.iter().map(|url| json!({"url": url, "max_attempts": max_attempts})).collect();
    tenant_with(db, api, name, &webhooks).await
}

/// A tenant with an emitter key and one webhook per body of `POST /api/v1/webhooks`.
pub async fn tenant_with(db: &str, api: &str, name: &str, webhooks: &[Value]) -> String {
    let tenant = cli(db, &["tenants", "create", "--name", name, "--json"]);
    let tenant = tenant["id"].as_str().expect("tenant id");
    let key = |scopes: &str| {
        cli(db, &["keys", "create", "--tenant", tenant, "--env", "test", "--scopes", scopes, "--json"])["key"]
            .as_str()
            .expect("key")
            .to_owned()
    };
    let admin = key("webhooks:write");
    for webhook in webhooks {
        let res = http()
            .post(format!("{api}/api/v1/webhooks"))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(webhook.to_string())
            .send()
            .await
            .expect("create webhook");
        assert_eq!(res.status().as_u16(), 201, "{}", res.text().await.unwrap_or_default());
    }
    key("events:write")
}

/// What the emitter saw.
#[derive(Default)]
pub struct Emitted {
    pub accepted: HashSet<String>,
    /// Answers by status, and `connection` for requests that got none.
    pub answers: BTreeMap<String, u64>,
    /// Events given up on after retrying for the whole budget (never answered 2xx).
    pub abandoned: u64,
}

/// Posts one event the way the integration guide tells clients to: retry 503, 429 and connection errors with the
/// same event id, with a short backoff, until answered or the budget runs out.
async fn emit(http: reqwest::Client, api: String, key: String, id: String, emitted: Arc<Mutex<Emitted>>) {
    let body = json!({"id": id, "type": "call.completed",
        "data": {"call_id": format!("call-{id}"), "status": "completed", "duration_seconds": 42}})
    .to_string();
    let budget = Instant::now() + Duration::from_secs(60);
    let mut backoff = Duration::from_millis(100);
    loop {
        let answer = http
            .post(format!("{api}/api/v1/events"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        let status = answer.as_ref().map(|r| r.status().as_u16()).ok();
        {
            let mut e = emitted.lock().expect("lock");
            let label = status.map_or_else(|| "connection".to_owned(), |s| s.to_string());
            *e.answers.entry(label).or_default() += 1;
            if status.is_some_and(|s| (200..300).contains(&s)) {
                e.accepted.insert(id);
                return;
            }
        }
        let retry = status.is_none_or(|s| s == 503 || s == 429);
        if !retry || Instant::now() > budget {
            emitted.lock().expect("lock").abandoned += 1;
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// The emitter keys of the suite's tenants.
pub struct Keys {
    pub main: String,
    pub hostile: String,
    pub broker: String,
}

/// Which tenant the emitter sends the `n`th event to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tenant {
    /// The flaky HTTP receiver.
    Main,
    /// Every hostile receiver (one in ten events).
    Hostile,
    /// The Redis stream that is restarted during the run (one in ten events).
    Broker,
}

impl Tenant {
    fn of(n: u64) -> Self {
        match n % 10 {
            9 => Self::Hostile,
            4 => Self::Broker,
            _ => Self::Main,
        }
    }

    /// The tenant the emitter sent this event to.
    pub fn of_event(id: &str) -> Self {
        id.strip_prefix("evt_chaos").and_then(|n| n.parse::<u64>().ok()).map_or(Self::Main, Self::of)
    }
}

/// Offers `rate` events a second for `seconds`, one in ten to the hostile tenant (which fans out to every hostile
/// mode) and one in ten to the broker's; finishes when every event was answered 2xx or given up on.
pub fn start_load(
    rate: u64,
    seconds: u64,
    base: String,
    keys: Keys,
    emitted: Arc<Mutex<Emitted>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = http();
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..rate * seconds {
            ticker.tick().await;
            let key = match Tenant::of(i) {
                Tenant::Main => keys.main.clone(),
                Tenant::Hostile => keys.hostile.clone(),
                Tenant::Broker => keys.broker.clone(),
            };
            let id = format!("evt_chaos{i}");
            tasks.spawn(emit(http.clone(), base.clone(), key, id, emitted.clone()));
        }
        tasks.join_all().await;
    })
}

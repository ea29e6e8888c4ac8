//! The benchmark's receiver: answers 200 at once (or never, for the fairness scenario) and records when each
//! event id arrived.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;

#[derive(Default)]
pub struct Arrivals {
    /// Event id → every arrival time (more than one is a duplicate).
    pub by_event: HashMap<String, Vec<Instant>>,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub arrivals: Arc<Mutex<Arrivals>>,
}

#[derive(Clone)]
struct Shared {
    arrivals: Arc<Mutex<Arrivals>>,
    hang: Option<Duration>,
}

/// Pulls `"id":"evt_…"` out of the envelope without parsing all of it: the receiver must not be the bottleneck.
fn event_id(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("\"id\":\"")? + 6;
    let end = text[start..].find('"')? + start;
    Some(text[start..end].to_owned())
}

async fn handle(State(shared): State<Shared>, body: Bytes) -> StatusCode {
    if let Some(delay) = shared.hang {
        tokio::time::sleep(delay).await;
        return StatusCode::OK;
    }
    let now = Instant::now();
    if let Some(id) = event_id(&body) {
        shared.arrivals.lock().expect("lock").by_event.entry(id).or_default().push(now);
    }
    StatusCode::OK
}

impl Receiver {
    /// `hang`: answer only after this long (a receiver that never answers within the delivery timeout).
    pub async fn start(hang: Option<Duration>) -> Self {
        let arrivals = Arc::new(Mutex::new(Arrivals::default()));
        let app = Router::new().fallback(handle).with_state(Shared { arrivals: arrivals.clone(), hang });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        Self { url: format!("http://{addr}/hook"), arrivals }
    }

    pub fn count(&self) -> usize {
        self.arrivals.lock().expect("lock").by_event.values().map(Vec::len).sum()
    }

    pub fn take(&self) -> Arrivals {
        std::mem::take(&mut *self.arrivals.lock().expect("lock"))
    }
}

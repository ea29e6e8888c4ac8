//! A real HTTP receiver on 127.0.0.1 that records every request and answers from a script.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    pub fn event_id(&self) -> String {
        self.json()["event"]["id"].as_str().expect("event.id").to_owned()
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// A status with one extra header, such as `Retry-After` or `Location`.
    WithHeader(u16, &'static str, String),
    /// Answers 200 only after this long (longer than the delivery timeout makes a timeout).
    Slow(Duration),
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    script: VecDeque<Reply>,
    default: Option<Reply>,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> Response {
    let reply = {
        let mut inner = inner.lock().expect("receiver lock");
        inner.received.push(Received { headers, body });
        inner.script.pop_front().or_else(|| inner.default.clone()).unwrap_or(Reply::Status(200))
    };
    match reply {
        Reply::Status(code) => (StatusCode::from_u16(code).expect("status"), "ok").into_response(),
        Reply::WithHeader(code, name, value) => {
            (StatusCode::from_u16(code).expect("status"), [(name, value)], "see header").into_response()
        }
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            (StatusCode::OK, "slow ok").into_response()
        }
    }
}

impl Receiver {
    /// Starts a receiver answering `default` to everything not scripted.
    pub async fn start(default: Reply) -> Self {
        let inner = Arc::new(Mutex::new(Inner { default: Some(default), ..Inner::default() }));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver serves") });
        Self { url: format!("http://{addr}/hook"), inner }
    }

    /// The next answers, in order, before falling back to the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.lock().expect("lock").script.extend(replies);
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().expect("lock").received.clone()
    }
}

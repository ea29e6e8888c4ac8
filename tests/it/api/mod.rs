//! The HTTP API through `oneshot`: every route, every error path, isolation, idempotency, rate limits, OpenAPI.

mod deliveries;
mod events;
mod portal;
mod service;
mod webhooks;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use courier_api::{ApiConfig, AppState, PortalConfig, RateLimit, WebhookRules};
use courier_core::MasterKey;
use courier_core::{Environment, Scope, Scopes};
use courier_store::{api_keys, tenants};
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt;

#[derive(Clone)]
pub struct Api {
    pub router: Router,
    pub pool: PgPool,
    /// Every scope, test environment.
    pub key: String,
}

pub fn api_config() -> ApiConfig {
    ApiConfig {
        rate_limit: None,
        trusted_proxies: Vec::new(),
        statement_timeout: Duration::from_secs(5),
        max_running_replays: 3,
        webhooks: WebhookRules {
            allow_http: false,
            relay_live: false,
            allowed_targets: vec!["127.0.0.0/8".parse().expect("cidr")],
            rotation_grace: Duration::from_secs(3600),
            default_max_attempts: 5,
            max_webhooks: 100,
        },
        portal: PortalConfig {
            public_url: "http://courier.test".into(),
            secure_cookie: false,
            frame_ancestors: "'none'".into(),
        },
    }
}

pub async fn key(pool: &PgPool, tenant: courier_core::TenantId, env: Environment, scopes: &[Scope]) -> String {
    api_keys::create(pool, tenant, env, &Scopes::new(scopes.iter().copied())).await.expect("key").plaintext
}

impl Api {
    pub async fn new(pool: PgPool) -> Self {
        Self::with_config(pool, api_config()).await
    }

    pub async fn with_config(pool: PgPool, config: ApiConfig) -> Self {
        let tenant = tenants::create(&pool, "Acme").await.expect("tenant");
        let key = key(&pool, tenant.id, Environment::Test, &Scope::ALL).await;
        let (state, loops) = AppState::new(pool.clone(), MasterKey::from_bytes(&[9u8; 32]), config);
        // The test owns the ingest dispatcher; it ends when the router is dropped.
        loops.spawn(state.components.clone(), tokio_util::sync::CancellationToken::new());
        Self { router: courier_api::router(state), pool, key }
    }

    /// The API on a [`Database`](courier_store::cluster::Database): a primary that may move, and replicas.
    pub async fn on_database(db: &courier_store::cluster::Database) -> Self {
        let pool = db.pool().clone();
        let tenant = tenants::create(&pool, "Acme").await.expect("tenant");
        let key = key(&pool, tenant.id, Environment::Test, &Scope::ALL).await;
        let (state, loops) = AppState::with_local_worker(db, MasterKey::from_bytes(&[9u8; 32]), api_config(), None);
        loops.spawn(state.components.clone(), tokio_util::sync::CancellationToken::new());
        Self { router: courier_api::router(state), pool, key }
    }

    /// A key for a brand-new tenant.
    pub async fn other_tenant_key(&self) -> String {
        let tenant = tenants::create(&self.pool, "Globex").await.expect("tenant");
        key(&self.pool, tenant.id, Environment::Test, &Scope::ALL).await
    }

    pub async fn raw(
        &self,
        method: Method,
        uri: &str,
        key: Option<&str>,
        body: Body,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(uri).header("content-type", "application/json");
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        let res = self.router.clone().oneshot(req.body(body).expect("request")).await.expect("response");
        let (parts, body) = res.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        let value =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("every body is JSON") };
        assert!(parts.headers.contains_key("x-request-id"), "{uri}: every response carries X-Request-Id");
        if !parts.status.is_success() {
            check_error_shape(parts.status, &value);
        }
        (parts.status, parts.headers, value)
    }

    pub async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(&self.key, method, uri, body).await
    }

    pub async fn call_as(&self, key: &str, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let body = body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty);
        let (status, _, value) = self.raw(method, uri, Some(key), body).await;
        (status, value)
    }

    pub async fn webhook(&self, url: &str) -> Value {
        let (status, body) =
            self.call(Method::POST, "/api/v1/webhooks", Some(json!({"url": url, "filter": {"events": ["*"]}}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    pub async fn event(&self, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, "/api/v1/events", Some(body)).await
    }
}

/// Every error is `{"error": {"code", "message", "details"}}`.
pub(crate) fn check_error_shape(status: StatusCode, body: &Value) {
    let error = &body["error"];
    assert!(error["code"].is_string(), "{status}: {body}");
    assert!(error["message"].is_string(), "{status}: {body}");
    assert!(error["details"].is_array(), "{status}: {body}");
}

pub(crate) fn call_completed(id: &str) -> Value {
    json!({"id": id, "type": "call.completed", "created": 1705680000,
           "data": {"call_id": "call-uuid", "transcript": [{"role": "user", "content": "Hi"}], "metrics": {"agent_count": 2}}})
}

pub(crate) fn field_of(error: &Value) -> Vec<String> {
    error["error"]["details"]
        .as_array()
        .map(|d| d.iter().filter_map(|x| x["field"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// One request from `addr` with `key`, through the router as a connected client.
pub(crate) async fn from_address(
    api: &Api,
    addr: &str,
    method: Method,
    uri: &str,
    key: &str,
    body: Body,
) -> StatusCode {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(body)
        .expect("request");
    let addr: std::net::SocketAddr = addr.parse().expect("address");
    req.extensions_mut().insert(axum::extract::ConnectInfo(addr));
    api.router.clone().oneshot(req).await.expect("response").status()
}

/// `GET /api/v1/webhooks` from a peer address, with an optional `X-Forwarded-For` and an optional key: the status
/// and the error message, if any.
pub(crate) async fn list_from(
    api: &Api,
    peer: &str,
    forwarded: Option<&str>,
    key: Option<&str>,
) -> (StatusCode, Option<String>) {
    let mut req = Request::get("/api/v1/webhooks");
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    if let Some(forwarded) = forwarded {
        req = req.header("x-forwarded-for", forwarded);
    }
    let mut req = req.body(Body::empty()).expect("request");
    let peer: std::net::SocketAddr = peer.parse().expect("address");
    req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
    let res = api.router.clone().oneshot(req).await.expect("response");
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.expect("body");
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, body["error"]["message"].as_str().map(str::to_owned))
}

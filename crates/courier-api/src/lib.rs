//! Courier's HTTP API (DESIGN.md §3): auth and scopes, webhooks, event ingest, delivery logs, replay, OpenAPI.
//!
//! `router(state)` is the whole service as an axum `Router`: the binary serves it, tests drive it with `oneshot`.

pub mod auth;
mod client_addr;
pub mod error;
pub mod extract;
mod filter;
pub mod limits;
pub mod openapi;
pub mod portal;
pub mod routes;
pub mod state;
pub mod target;
pub mod trace;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderName;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::field::Empty;

pub use error::ApiError;
pub use state::{ApiConfig, AppState, PortalConfig, RateLimit, WebhookRules};

use crate::routes::{deliveries, events, health, portal_sessions, relay, webhooks};

/// One event's body: 256 KiB of `data` plus room for the rest of the envelope.
pub const EVENT_BODY_LIMIT: usize = 256 * 1024 + 4 * 1024;
/// A batch's body. Each event's `data` is still held to 256 KiB.
pub const BATCH_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// Every other body (webhook configuration, replay filters).
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest a request may take, its body's upload included: a client trickling a body (or a query stuck
/// behind a lock) does not hold a connection and its memory for ever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Answers 408 in the API's error shape when a request passes [`REQUEST_TIMEOUT`]. An ingest cut short may still
/// commit; the client's retry with the same event id then gets the first answer.
async fn deadline(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(res) => res,
        Err(_) => ApiError::request_timeout().into_response(),
    }
}

/// Keeps requests in step with the primary. While no database host answers as one (a failover under way), an API
/// request is answered 503 with `Retry-After` at once, rather than held until the pool gives up waiting for a
/// connection; the portal's pages and the health checks still run, they answer for themselves. And when a request
/// met a read-only session (`25006`: a standby behind a proxy, a name that moved), every connection opened so far is
/// closed as it is next acquired. The request itself is not run again: no statement a GET runs writes, so only
/// writes meet `25006`, and whether a write may be repeated is the client's to know (an event's id makes ingest
/// safe to retry), so it gets the 503.
async fn follow_the_primary(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if state.primary_lost() && req.uri().path().starts_with("/api/") {
        return ApiError::retry_later(
            "the database has no reachable primary (a failover may be under way); retry shortly",
            "no primary",
        )
        .into_response();
    }
    let response = next.run(req).await;
    if response.extensions().get::<error::ReadOnlySession>().is_some() {
        state.close_connections();
    }
    response
}

/// API request latency by route and status, for `/metrics`.
async fn record_request(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::histogram!("courier_http_request_duration_seconds", "route" => route, "status" => status)
        .record(started.elapsed().as_secs_f64());
    res
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route("/api/v1/webhooks/{id}", get(webhooks::get).patch(webhooks::update).delete(webhooks::delete))
        .route("/api/v1/webhooks/{id}/rotate-secret", post(webhooks::rotate_secret))
        .route("/api/v1/webhooks/{id}/listen", get(relay::listen))
        .route("/api/v1/events", post(events::ingest).layer(DefaultBodyLimit::max(EVENT_BODY_LIMIT)).get(events::list))
        .route("/api/v1/events/batch", post(events::ingest_batch).layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT)))
        .route("/api/v1/events/{id}", get(events::get))
        .route("/api/v1/deliveries", get(deliveries::list))
        .route("/api/v1/deliveries/replay", post(deliveries::replay_bulk))
        .route("/api/v1/deliveries/{id}", get(deliveries::get))
        .route("/api/v1/deliveries/{id}/replay", post(deliveries::replay_one))
        .route("/api/v1/replays/{id}", get(deliveries::get_replay))
        .route("/api/v1/portal/sessions", post(portal_sessions::create))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(|| async { axum::Json(openapi::document()) }))
        .merge(portal::router(state.clone()))
        .fallback(|| async { ApiError::route_not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .layer(axum::middleware::from_fn(deadline))
        .layer(axum::middleware::from_fn_with_state(state.clone(), follow_the_primary))
        .route_layer(axum::middleware::from_fn(record_request))
        .with_state(state);

    api.layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
        ApiError::internal("a handler panicked").into_response()
    }))
    .layer(PropagateRequestIdLayer::new(REQUEST_ID))
    .layer(
        TraceLayer::new_for_http()
            .make_span_with(|req: &Request| {
                let route = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str).unwrap_or("unmatched");
                let request_id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
                let span = tracing::info_span!(
                    "request",
                    otel.name = format!("{} {route}", req.method()),
                    otel.kind = "server",
                    method = %req.method(),
                    route,
                    request_id,
                    tenant = Empty,
                    status = Empty,
                );
                trace::continue_caller_trace(&span, req.headers());
                span
            })
            .on_response(|res: &axum::response::Response, latency: Duration, span: &tracing::Span| {
                span.record("status", res.status().as_u16());
                tracing::debug!(status = res.status().as_u16(), latency_ms = latency.as_millis() as u64, "answered");
            }),
    )
    .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

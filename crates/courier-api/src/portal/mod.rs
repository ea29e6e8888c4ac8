//! The tenant portal (DESIGN.md §3.7): server-rendered pages where a tenant's people find, inspect and replay
//! deliveries and look after their webhooks, entered through a magic link the tenant's backend minted.
//!
//! Same invariants as the JSON API: every read and write goes through the store and scheduler functions the API
//! uses (no SQL here), every object is looked up with the session's [`Owner`](courier_store::Owner) (another
//! tenant's id is a 404), and each action checks the session's scopes. On top of that:
//! - pages are HTML from `maud`, which escapes every interpolated value, so what a receiver answered is text;
//! - no page needs JavaScript, and the Content-Security-Policy allows none: `default-src 'none'`, styles from
//!   `/portal/style.css` only;
//! - every form that changes something carries the session's CSRF token, checked by the extractor such handlers
//!   take ([`session::Submitted`]), so none can forget it.

mod catalog;
mod chart;
mod delivery;
mod log;
mod overview;
mod page;
mod pretty;
mod recover;
mod session;
mod webhook;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::state::AppState;

pub use page::PortalError;

/// The portal's one stylesheet, hand-written, served from here (no CDN, no build step).
const STYLESHEET: &str = include_str!("style.css");

/// The portal's routes under `/portal`.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/portal", get(overview::show))
        .route("/portal/login", get(session::landing).post(session::login))
        .route("/portal/logout", post(session::logout))
        .route("/portal/style.css", get(stylesheet))
        .route("/portal/icon.svg", get(icon))
        .route("/portal/webhooks/{id}", get(webhook::show))
        .route("/portal/webhooks/{id}/status", post(webhook::set_status))
        .route("/portal/webhooks/{id}/rotate-secret", post(webhook::rotate_secret))
        .route("/portal/webhooks/{id}/test", post(webhook::send_test))
        .route("/portal/deliveries", get(log::show))
        .route("/portal/deliveries/{id}", get(delivery::show))
        .route("/portal/deliveries/{id}/replay", post(delivery::replay))
        .route("/portal/recover", get(recover::show).post(recover::start))
        .route("/portal/replays/{id}", get(recover::progress))
        .route("/portal/events", get(catalog::show))
        .route("/portal/{*rest}", get(|| async { PortalError::NotFound("page") }))
        .layer(axum::middleware::from_fn_with_state(state, protect))
}

/// A plain square icon, so browsers do not ask the API for `/favicon.ico` (a 404 on every page).
const ICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#2954c7"/><path d="M4 5l4 3 4-3v6H4z" fill="#fff"/></svg>"##;

async fn icon() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "public, max-age=86400")], ICON)
}

async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=300")], STYLESHEET)
}

/// The headers every portal response carries: a CSP that allows no script at all and only our stylesheet, the
/// operator's `frame-ancestors`, no MIME sniffing, no referrer (a login link's token never leaks), no caching.
async fn protect(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let ancestors = &state.config.portal.frame_ancestors;
    let csp = format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; \
         frame-ancestors {ancestors}"
    );
    let headers = res.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if ancestors == "'none'" {
        // For browsers older than CSP's frame-ancestors.
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    res
}

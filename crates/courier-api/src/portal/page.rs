//! The frame every portal page shares, the small formatting helpers, and the pages for what went wrong.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use courier_core::Scope;
use courier_scheduler::DeliveryStatus;
use maud::{DOCTYPE, Markup, html};

/// Which section of the navigation a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Deliveries,
    Recover,
    Events,
}

/// What the header shows a signed-in viewer (`session::Viewer::nav`): where they are, their environment, the
/// sections their scopes open, and the sign-out form's CSRF field. Plain data, so pages need not know sessions.
pub struct Nav {
    pub section: Section,
    pub environment: courier_core::Environment,
    pub can_replay: bool,
    pub csrf_field: Markup,
}

/// A whole page: the header with navigation (for a signed-in viewer) and `main`.
pub fn layout(title: &str, viewer: Option<Nav>, main: Markup) -> Markup {
    page(title, viewer, None, main)
}

/// A page that loads `url` after `seconds` by itself (no script): a redirect that stays same-site, a progress page.
pub fn refreshing(title: &str, viewer: Option<Nav>, seconds: u32, url: &str, main: Markup) -> Markup {
    page(title, viewer, Some(format!("{seconds}; url={url}")), main)
}

fn page(title: &str, viewer: Option<Nav>, refresh: Option<String>, main: Markup) -> Markup {
    let link = |href: &str, label: &str, here: bool| {
        html! { a href=(href) aria-current=[here.then_some("page")] { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(refresh) = refresh {
                    meta http-equiv="refresh" content=(refresh);
                }
                title { (title) " · Courier" }
                link rel="stylesheet" href="/portal/style.css";
                link rel="icon" href="/portal/icon.svg" type="image/svg+xml";
            }
            body {
                header {
                    span.brand { "Courier" }
                    @if let Some(Nav { section, environment, can_replay, csrf_field }) = viewer {
                        nav aria-label="Portal" {
                            (link("/portal", "Webhooks", section == Section::Overview))
                            (link("/portal/deliveries", "Delivery log", section == Section::Deliveries))
                            @if can_replay {
                                (link("/portal/recover", "Recover", section == Section::Recover))
                            }
                            (link("/portal/events", "Event catalog", section == Section::Events))
                        }
                        span.env { (environment.as_str()) " mode" }
                        form method="post" action="/portal/logout" {
                            (csrf_field)
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main { (main) }
            }
        }
    }
}

pub fn render(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

/// `2026-01-19 12:00:05 UTC`.
pub fn time(t: DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S UTC")) } }
}

pub fn status_badge(status: DeliveryStatus) -> Markup {
    html! { span class=(format!("badge {}", status.as_str())) { (status.as_str()) } }
}

/// What can go wrong on a portal request, each answered with a page of its own.
#[derive(Debug)]
pub enum PortalError {
    /// No session, or it expired, was signed out or its key revoked; also a login link that cannot be used.
    SignedOut,
    /// Not found, or another tenant's: the same answer either way.
    NotFound(&'static str),
    /// The session lacks the scope this needs.
    Forbidden(Scope),
    /// A form without this session's CSRF token.
    Csrf,
    /// Input the page cannot use, with what to fix.
    BadInput(String),
    /// Something on our side; the cause is logged, not shown.
    Internal(crate::ApiError),
    /// This tenant runs as many expensive reads (log pages, replay counts) as it may right now.
    Busy(crate::limits::RetryAfter),
}

impl From<courier_store::Error> for PortalError {
    fn from(err: courier_store::Error) -> Self {
        PortalError::Internal(err.into())
    }
}

impl From<courier_scheduler::Error> for PortalError {
    fn from(err: courier_scheduler::Error) -> Self {
        PortalError::Internal(err.into())
    }
}

impl From<courier_scheduler::webhook_changes::Refused> for PortalError {
    fn from(err: courier_scheduler::webhook_changes::Refused) -> Self {
        match err {
            courier_scheduler::webhook_changes::Refused::NotFound => PortalError::NotFound("webhook"),
            other => PortalError::Internal(other.into()),
        }
    }
}

impl From<sqlx::Error> for PortalError {
    fn from(err: sqlx::Error) -> Self {
        PortalError::Internal(err.into())
    }
}

impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        let mut read_only = false;
        let mut retry_after = None;
        let (status, title, message) = match self {
            PortalError::SignedOut => (
                StatusCode::UNAUTHORIZED,
                "This link has expired",
                "This portal link has expired or was already used, or the session ended. \
                 Open the portal again from your dashboard to get a new link."
                    .to_owned(),
            ),
            PortalError::NotFound(what) => {
                (StatusCode::NOT_FOUND, "Not found", format!("There is no such {what} here."))
            }
            PortalError::Forbidden(scope) => (
                StatusCode::FORBIDDEN,
                "Not allowed",
                format!("This portal session cannot do that: it needs the {scope} permission."),
            ),
            PortalError::Csrf => (
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form was not sent from your current portal session. Go back, reload the page and try again."
                    .to_owned(),
            ),
            PortalError::BadInput(message) => (StatusCode::BAD_REQUEST, "Check your input", message),
            PortalError::Busy(wait) => {
                retry_after = Some(wait.0);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    "Busy",
                    "Your portal is running as many searches as it may at once. Wait a moment and reload.".to_owned(),
                )
            }
            PortalError::Internal(err) => {
                read_only = err.read_only();
                let status = err.status();
                // A database that is away for a moment says when to come back, on a page as in the API.
                retry_after = err.retry_after();
                err.log();
                (status, "Something went wrong", "Courier could not answer just now. Try again shortly.".to_owned())
            }
        };
        let page = layout(
            title,
            None,
            html! {
                h1 { (title) }
                p { (message) }
            },
        );
        let mut res = (status, Html(page.into_string())).into_response();
        if read_only {
            res.extensions_mut().insert(crate::error::ReadOnlySession);
        }
        if let Some(secs) = retry_after {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        res
    }
}

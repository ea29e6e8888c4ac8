//! Every error the API returns: `{"error": {"code", "message", "details"}}` with a proper status (DESIGN.md §3.7).
//! A 500 never leaks internals: the cause is logged once, inside the request's span (which carries the request id).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// One problem with one field of the input.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Where the problem is, e.g. `url`, `filter.events[1]`, `events[3].type`.
    pub field: String,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable: `invalid_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `payload_too_large`, `validation_failed`, `rate_limited`, `service_unavailable`, `internal_error`.
    pub code: &'static str,
    pub message: String,
    pub details: Vec<ErrorDetail>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
    retry_after: Option<u64>,
    /// Logged once (with its source chain) when the response is built; never sent.
    cause: Option<BoxError>,
    /// The database refused a write as read-only (`25006`): the response carries [`ReadOnlySession`], so the
    /// router closes the pools' connections and the next request gets fresh ones.
    read_only: bool,
}

/// Marks a response (the API's or a portal page) whose request met a read-only session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadOnlySession;

/// Any error, kept as the cause of an API error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Displays an error and every source under it, `: `-separated.
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody { code, message: message.into(), details: Vec::new() },
            retry_after: None,
            cause: None,
            read_only: false,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(missing_scope: courier_core::Scope) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", format!("this API key lacks the `{missing_scope}` scope"))
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no such {what}"))
    }

    pub fn route_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not accept that method")
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    pub fn validation(details: Vec<ErrorDetail>) -> Self {
        let message = match details.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => format!("{} fields are invalid", details.len()),
        };
        let mut err = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", message);
        err.body.details = details;
        err
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::validation(vec![ErrorDetail { field: field.into(), message: message.into() }])
    }

    /// 422: the tenant already runs as many bulk replays as it may (`COURIER_MAX_RUNNING_REPLAYS`).
    pub fn replays_at_limit(limit: u32) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!(
                "this tenant already has {limit} bulk replays queued or running, its limit \
                 (COURIER_MAX_RUNNING_REPLAYS); wait for one to end"
            ),
        )
    }

    /// 429 of the per-key limit: this key sent more than its rate.
    pub(crate) fn rate_limited(retry_after: crate::limits::RetryAfter) -> Self {
        Self::too_many("too many requests for this API key", retry_after.0)
    }

    /// 429 of the failed-login limit: too many requests from this client presented keys that do not authenticate.
    /// Only requests whose key fails get it; a valid key is never refused for this.
    pub(crate) fn failed_logins(retry_after: crate::limits::RetryAfter) -> Self {
        Self::too_many(
            "too many failed authentications from this address; requests with a valid API key are not affected",
            retry_after.0,
        )
    }

    /// 429 of the expensive-read limit: this tenant runs as many log pages and replay counts as it may at once.
    pub(crate) fn busy_reads(retry_after: crate::limits::RetryAfter) -> Self {
        Self::too_many(
            "too many delivery log pages or replay counts for this tenant at once; retry shortly",
            retry_after.0,
        )
    }

    fn too_many(message: &str, retry_after_secs: u64) -> Self {
        let mut err = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        err.retry_after = Some(retry_after_secs.max(1));
        err
    }

    pub fn unavailable(cause: impl Into<BoxError>) -> Self {
        let mut err = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "the database is unavailable; retry shortly",
        );
        err.retry_after = Some(1);
        err.cause = Some(cause.into());
        err
    }

    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request took longer than 30 s (its body included); retry it",
        )
    }

    /// A 503 with `Retry-After` for a part of this process that is not running right now.
    pub fn retry_later(message: impl Into<String>, cause: impl Into<BoxError>) -> Self {
        let mut err = Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", message);
        err.retry_after = Some(1);
        err.cause = Some(cause.into());
        err
    }

    pub fn internal(cause: impl Into<BoxError>) -> Self {
        let mut err = Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error");
        err.cause = Some(cause.into());
        err
    }

    /// The seconds a client should wait before retrying, when the answer says so (429, 503).
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// Whether the database refused this request's write as read-only (`25006`).
    pub(crate) fn read_only(&self) -> bool {
        self.read_only
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The error as the body of one item of a batch answer.
    pub fn into_body(self) -> ErrorBody {
        self.log();
        self.body
    }

    pub(crate) fn log(&self) {
        if let Some(cause) = &self.cause
            && self.status.is_server_error()
        {
            tracing::error!(status = self.status.as_u16(), cause = %Chain(cause.as_ref()), "request failed");
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        // The database going away mid-request (shutdown, recovery, a reset) is a 503 the client retries, never a 500.
        let read_only = matches!(&err, sqlx::Error::Database(db) if db.code().as_deref() == Some("25006"));
        let mut api = if courier_store::is_transient(&err) { Self::unavailable(err) } else { Self::internal(err) };
        api.read_only = read_only;
        api
    }
}

impl From<courier_store::Error> for ApiError {
    fn from(err: courier_store::Error) -> Self {
        match err {
            courier_store::Error::Database(db) => db.into(),
            courier_store::Error::TooManyWebhooks(limit) => Self::invalid(
                "url",
                format!("this tenant already has {limit} webhooks, its limit (COURIER_MAX_WEBHOOKS); delete one first"),
            ),
            other => Self::internal(other),
        }
    }
}

impl From<courier_scheduler::Error> for ApiError {
    fn from(err: courier_scheduler::Error) -> Self {
        match err {
            courier_scheduler::Error::Database(db) => db.into(),
            courier_scheduler::Error::Store(store) => store.into(),
        }
    }
}

impl From<courier_scheduler::webhook_changes::Refused> for ApiError {
    fn from(err: courier_scheduler::webhook_changes::Refused) -> Self {
        use courier_scheduler::webhook_changes::Refused;
        match err {
            Refused::NotFound => ApiError::not_found("webhook"),
            Refused::HeadersStayBehind => ApiError::invalid("headers", Refused::HeadersStayBehind.to_string()),
            Refused::Failed(err) => err.into(),
        }
    }
}

impl From<courier_scheduler::ingest::IngestError> for ApiError {
    fn from(err: courier_scheduler::ingest::IngestError) -> Self {
        use courier_scheduler::ingest::IngestError;
        match err {
            // Not committed, so not accepted: the client retries with the same id (the guide's advice for a 503).
            IngestError::Stopped => Self::retry_later("ingest is restarting; retry with the same event id", err),
            IngestError::Failed(err) => err.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let status = self.status;
        let retry_after = self.retry_after;
        let read_only = self.read_only;
        let mut response = (status, axum::Json(ErrorResponse { error: self.body })).into_response();
        if read_only {
            response.extensions_mut().insert(ReadOnlySession);
        }
        if let Some(secs) = retry_after
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

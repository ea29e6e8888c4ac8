//! `/api/v1/deliveries`: the delivery log and replay.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use courier_core::{DeliveryId, ResponseBody, Scope};
use courier_scheduler::DeliveryStatus;
use courier_scheduler::logs::{self, Attempt, Delivery};
use courier_scheduler::replay::{self, Replayed};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Page, page_limit};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorResponse};
use crate::extract::{ApiJson, ApiQuery};
use crate::filter::{Face, FilterText, Invalid};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptOutput {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    /// The receiver's status; `null` when no response came.
    pub status_code: Option<i32>,
    /// `timeout`, `connect`, `dns`, `tls`, `blocked_target`, `invalid_url`, `body`, `refused`, `not_confirmed` or
    /// `other`; `null` on a response (a broker's acknowledgement is recorded as a 200).
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    /// The first 4 KiB of the receiver's answer as text. When it was not UTF-8 text (`response_body_binary`),
    /// invalid bytes and control characters show as U+FFFD and `response_body_base64` holds the exact bytes.
    pub response_body: Option<String>,
    /// The answer was not UTF-8 text (a NUL, a control character or invalid UTF-8).
    pub response_body_binary: bool,
    /// The exact bytes kept, only when `response_body_binary`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body_base64: Option<String>,
    /// The receiver sent more than the 4 KiB kept.
    pub response_body_truncated: bool,
    /// The `t=` of the signature this attempt carried.
    pub signature_timestamp: i64,
}

impl From<Attempt> for AttemptOutput {
    fn from(a: Attempt) -> Self {
        Self {
            attempt: a.attempt,
            started_at: a.started_at,
            duration_ms: a.duration_ms,
            status_code: a.status_code.map(i32::from),
            error_kind: a.error_kind.map(|k| k.as_str().to_owned()),
            error_message: a.error_message,
            response_body: a.response_body.as_ref().map(ResponseBody::display),
            response_body_binary: a.response_body.as_ref().is_some_and(ResponseBody::is_binary),
            response_body_base64: a
                .response_body
                .as_ref()
                .filter(|body| body.is_binary())
                .map(|body| base64::engine::general_purpose::STANDARD.encode(body.as_bytes())),
            response_body_truncated: a.response_body.as_ref().is_some_and(ResponseBody::truncated),
            signature_timestamp: a.signature_timestamp,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryOutput {
    #[schema(example = "dlv_01JD3Z6V8Q2N7K4M5P6R7S8T9V")]
    pub id: String,
    pub event_id: String,
    #[schema(example = "call.completed")]
    pub event_type: &'static str,
    pub call_id: String,
    pub webhook_id: String,
    /// `waiting`, `pending`, `delivering`, `succeeded`, `failed` or `cancelled`.
    pub status: &'static str,
    pub attempt_count: u32,
    pub max_attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub replay_of: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Only on `GET /api/v1/deliveries/{id}`, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptOutput>>,
}

impl DeliveryOutput {
    pub fn new(d: Delivery, attempts: Option<Vec<Attempt>>) -> Self {
        Self {
            id: d.id.to_string(),
            event_id: d.event_id.to_string(),
            event_type: d.event_type.as_str(),
            call_id: d.call_id,
            webhook_id: d.webhook_id.to_string(),
            status: d.status.as_str(),
            attempt_count: d.attempt_count,
            max_attempts: d.max_attempts,
            next_attempt_at: d.next_attempt_at,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            replay_of: d.replay_of.map(|id| id.to_string()),
            created_at: d.created_at,
            updated_at: d.updated_at,
            attempts: attempts.map(|a| a.into_iter().map(AttemptOutput::from).collect()),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// `waiting`, `pending`, `delivering`, `succeeded`, `failed` or `cancelled`.
    #[param(value_type = Option<super::DeliveryStatusName>)]
    pub status: Option<String>,
    #[param(pattern = "^wh_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
    pub webhook_id: Option<String>,
    #[param(value_type = Option<super::EventTypeName>)]
    pub event_type: Option<String>,
    #[param(max_length = 256)]
    pub call_id: Option<String>,
    /// RFC 3339; deliveries of events received at or after (a delivery is listed by its event's time).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// RFC 3339; deliveries of events received before.
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// 1 to 100; 20 by default.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page (a delivery id).
    #[param(pattern = "^dlv_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
    pub cursor: Option<String>,
}

impl From<Invalid> for ApiError {
    fn from(err: Invalid) -> Self {
        ApiError::invalid(&err.field, err.message)
    }
}

/// List deliveries
///
/// Newest first, filtered, in cursor pages. With `status` or `event_type` (and no `webhook_id` or `call_id`), each
/// request examines at most 5,000 of the tenant's deliveries, so a page may hold fewer than `limit` (even none) and
/// still carry a `next_cursor`: follow it until it is `null`.
#[utoipa::path(get, path = "/api/v1/deliveries", tag = "deliveries", params(ListParams),
    security(("api_key" = ["deliveries:read"])),
    responses((status = 200, body = Page<DeliveryOutput>), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
              (status = 422, body = ErrorResponse), (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<Page<DeliveryOutput>>> {
    let owner = principal.require(Scope::DeliveriesRead)?;
    let limit = page_limit(params.limit)?;
    let filter = FilterText {
        status: params.status.as_deref(),
        webhook_id: params.webhook_id.as_deref(),
        event_types: params.event_type.as_deref().map(|t| ("event_type".to_owned(), t)).into_iter().collect(),
        call_id: params.call_id.as_deref(),
        since: params.since.as_deref(),
        until: params.until.as_deref(),
        from: Face::Api,
    }
    .parse()?;
    let before = params
        .cursor
        .map(|c| DeliveryId::parse(&c).map_err(|_| ApiError::invalid("cursor", "not a cursor this list returned")))
        .transpose()?;
    let _turn = state.reads.begin(owner.tenant).map_err(ApiError::busy_reads)?;
    let page = logs::page(state.reader(), owner, &filter, before.as_ref(), limit + 1).await?;
    let mut out = Page::from_rows(page.rows, limit, |d| d.id.to_string(), |d| DeliveryOutput::new(d, None));
    // A short page whose scan stopped early still has a next page: the filters are checked on a bounded window of
    // history per request, so a rare status never makes one request read ten million rows.
    if out.next_cursor.is_none() {
        out.next_cursor = page.resume_before.map(|id| id.to_string());
    }
    Ok(Json(out))
}

fn parse_delivery_id(text: &str) -> Result<DeliveryId, ApiError> {
    DeliveryId::parse(text).map_err(|_| ApiError::not_found("delivery"))
}

/// Get a delivery with its attempts
#[utoipa::path(get, path = "/api/v1/deliveries/{id}", tag = "deliveries", params(("id" = String, Path, description = "dlv_…")),
    security(("api_key" = ["deliveries:read"])),
    responses((status = 200, body = DeliveryOutput), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse)))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<DeliveryOutput>> {
    let owner = principal.require(Scope::DeliveriesRead)?;
    let id = parse_delivery_id(&id)?;
    let mut found = logs::get(state.reader(), owner, &id).await?;
    if let (None, Some(primary)) = (&found, state.primary_on_miss()) {
        found = logs::get(primary, owner, &id).await?;
    }
    let (delivery, attempts) = found.ok_or_else(|| ApiError::not_found("delivery"))?;
    Ok(Json(DeliveryOutput::new(delivery, Some(attempts))))
}

/// Replay a delivery
///
/// A new delivery (`replay_of` the old one) of the same event to the same webhook, with a fresh attempt budget.
/// 409 when the webhook is disabled or deleted.
#[utoipa::path(post, path = "/api/v1/deliveries/{id}/replay", tag = "deliveries", params(("id" = String, Path, description = "dlv_…")),
    security(("api_key" = ["deliveries:replay"])),
    responses((status = 201, body = DeliveryOutput), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse), (status = 429, body = ErrorResponse),
              (status = 503, body = ErrorResponse)))]
pub async fn replay_one(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<DeliveryOutput>)> {
    let owner = principal.require(Scope::DeliveriesReplay)?;
    let id = parse_delivery_id(&id)?;
    match replay::replay_one(&state.pool, owner, &id, crate::trace::current()).await? {
        Replayed::Queued(delivery) => Ok((StatusCode::CREATED, Json(DeliveryOutput::new(*delivery, None)))),
        Replayed::NotFound => Err(ApiError::not_found("delivery")),
        Replayed::WebhookInactive => Err(ApiError::conflict("the webhook is disabled or deleted; enable it to replay")),
    }
}

/// Which deliveries a bulk replay takes.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkReplayInput {
    #[schema(pattern = "^wh_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
    pub webhook_id: Option<String>,
    /// `failed` when omitted.
    #[schema(value_type = Option<super::DeliveryStatusName>)]
    pub status: Option<String>,
    #[schema(value_type = Option<Vec<super::EventTypeName>>)]
    pub event_types: Option<Vec<String>>,
    /// RFC 3339; deliveries of events received at or after (a delivery is listed by its event's time).
    #[schema(format = DateTime)]
    pub since: Option<String>,
    /// RFC 3339; deliveries of events received before.
    #[schema(format = DateTime)]
    pub until: Option<String>,
    /// Count what would be queued without queueing it.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkReplayOutput {
    /// How many replays would be queued now.
    pub queued: u64,
    pub dry_run: bool,
}

/// A bulk replay job and its progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayOutput {
    #[schema(example = "rpl_01JD3Z6V8Q2N7K4M5P6R7S8T9V")]
    pub id: String,
    /// `queued`, `running`, `finished` or `failed` (its chunks kept failing; `error` says why).
    pub status: String,
    /// Deliveries queued so far.
    pub replayed: u64,
    /// Deliveries examined so far, matching or not.
    pub scanned: u64,
    /// Why the last chunk failed while the job retries it, and why a `failed` job failed; `null` otherwise.
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When it finished or failed.
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<replay::ReplayJob> for ReplayOutput {
    fn from(j: replay::ReplayJob) -> Self {
        Self {
            id: j.id.to_string(),
            status: j.status.as_str().to_owned(),
            replayed: j.replayed,
            scanned: j.scanned,
            error: j.error,
            created_at: j.created_at,
            updated_at: j.updated_at,
            finished_at: j.finished_at,
        }
    }
}

/// Replay deliveries in bulk
///
/// Queues a background job (202, with its progress at `GET /api/v1/replays/{id}`) that replays every matching
/// delivery whose webhook is enabled (failed ones unless `status` says otherwise), created before the request, that
/// is neither a replay still queued nor replayed before. `dry_run` answers 200 with the count instead. A tenant may
/// have `COURIER_MAX_RUNNING_REPLAYS` jobs queued or running at once; past that, 422.
#[utoipa::path(post, path = "/api/v1/deliveries/replay", tag = "deliveries", request_body = BulkReplayInput,
    security(("api_key" = ["deliveries:replay"])),
    responses((status = 200, body = BulkReplayOutput), (status = 202, body = ReplayOutput),
              (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
              (status = 403, body = ErrorResponse), (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse),
              (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse)))]
pub async fn replay_bulk(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<BulkReplayInput>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let owner = principal.require(Scope::DeliveriesReplay)?;
    let event_types = body.event_types.as_deref().unwrap_or_default();
    let mut filter = FilterText {
        status: body.status.as_deref(),
        webhook_id: body.webhook_id.as_deref(),
        event_types: event_types.iter().enumerate().map(|(i, t)| (format!("event_types[{i}]"), t.as_str())).collect(),
        call_id: None,
        since: body.since.as_deref(),
        until: body.until.as_deref(),
        from: Face::Api,
    }
    .parse()?;
    filter.status.get_or_insert(DeliveryStatus::Failed);
    if body.dry_run {
        let _turn = state.reads.begin(owner.tenant).map_err(ApiError::busy_reads)?;
        let queued = replay::count_bulk(state.reader(), owner, &filter).await?;
        return Ok(Json(BulkReplayOutput { queued, dry_run: true }).into_response());
    }
    let limit = state.config.max_running_replays;
    let job = match replay::start_bulk(&state.pool, owner, &filter, crate::trace::current(), limit).await? {
        replay::Started::Queued(job) => job,
        replay::Started::AtLimit(limit) => return Err(ApiError::replays_at_limit(limit)),
    };
    let location = format!("/api/v1/replays/{}", job.id);
    Ok((StatusCode::ACCEPTED, [(axum::http::header::LOCATION, location)], Json(ReplayOutput::from(job)))
        .into_response())
}

/// Get a bulk replay job
#[utoipa::path(get, path = "/api/v1/replays/{id}", tag = "deliveries", params(("id" = String, Path, description = "rpl_…")),
    security(("api_key" = ["deliveries:replay"])),
    responses((status = 200, body = ReplayOutput), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse)))]
pub async fn get_replay(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<ReplayOutput>> {
    let owner = principal.require(Scope::DeliveriesReplay)?;
    let id = courier_core::ReplayId::parse(&id).map_err(|_| ApiError::not_found("replay"))?;
    let job = replay::job(&state.pool, owner, &id).await?.ok_or_else(|| ApiError::not_found("replay"))?;
    Ok(Json(job.into()))
}

//! `/api/v1/webhooks`: a tenant's endpoints.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use courier_core::{EventSelector, PayloadFilter, Scope, WebhookId};
use courier_scheduler::disabling;
use courier_store::webhooks::{self, NewWebhook, Webhook, WebhookPatch};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Page, PageParams, double_option, page_limit};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorDetail, ErrorResponse};
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;
use crate::target::validate_url;

/// Which events a webhook receives and what of their data.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterInput {
    /// Event types, or `["*"]` (the default) for all.
    #[schema(example = json!(["call.completed", "call.failed"]), min_items = 1, max_items = 64,
             value_type = Option<Vec<super::EventSelectorName>>)]
    pub events: Option<Vec<String>>,
    /// Keep `data.transcript` (personal data; off by default).
    pub include_transcript: Option<bool>,
    /// Keep `data.metrics` (off by default).
    pub include_metrics: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    #[schema(example = "https://your-backend.com/webhooks/agent-studio", max_length = 2048)]
    pub url: String,
    pub filter: Option<FilterInput>,
    #[schema(max_length = 1024)]
    pub description: Option<String>,
    /// 1 to 25; the server default (5) when omitted.
    #[schema(minimum = 1, maximum = 25)]
    pub max_attempts: Option<u32>,
    /// `call`: deliveries that share a `call_id` go one at a time, in the order their events were accepted;
    /// `none` (the default): as soon as they are due.
    pub ordering: Option<OrderingInput>,
}

/// A webhook's delivery order.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderingInput {
    None,
    Call,
}

impl From<OrderingInput> for webhooks::Ordering {
    fn from(o: OrderingInput) -> Self {
        match o {
            OrderingInput::None => webhooks::Ordering::None,
            OrderingInput::Call => webhooks::Ordering::Call,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    pub url: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// Only the fields given change.
    pub filter: Option<FilterInput>,
    #[schema(minimum = 1, maximum = 25)]
    pub max_attempts: Option<u32>,
    /// Applies to deliveries created from now on.
    pub ordering: Option<OrderingInput>,
    /// `enabled` or `disabled`; disabling cancels the webhook's pending deliveries.
    pub status: Option<StatusInput>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusInput {
    Enabled,
    Disabled,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FilterOutput {
    #[schema(example = json!(["call.completed", "call.failed"]))]
    pub events: Vec<&'static str>,
    pub include_transcript: bool,
    pub include_metrics: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookOutput {
    #[schema(example = "wh_01JD3Z6V8Q2N7K4M5P6R7S8T9V")]
    pub id: String,
    pub url: String,
    pub description: Option<String>,
    pub filter: FilterOutput,
    /// `enabled` or `disabled`.
    pub status: &'static str,
    /// Why it is disabled: `manual`, `gone` (the receiver answered 410) or `failing`.
    pub disabled_reason: Option<&'static str>,
    pub livemode: bool,
    pub max_attempts: u32,
    /// `none` or `call` (per-call ordering).
    pub ordering: &'static str,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Until when the previous secret still signs, during a rotation.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// `whsec_…`: only in the creation and rotation responses. Save it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub secret: Option<courier_core::Redacted<String>>,
}

impl WebhookOutput {
    fn new(w: Webhook, secret: Option<String>) -> Self {
        let secret = secret.map(courier_core::Redacted);
        Self {
            id: w.id.to_string(),
            url: w.url,
            description: w.description,
            filter: FilterOutput {
                events: w.events.names(),
                include_transcript: w.payload.include_transcript,
                include_metrics: w.payload.include_metrics,
            },
            status: w.status.as_str(),
            disabled_reason: w.status.disabled_reason().map(|r| r.as_str()),
            livemode: w.owner.environment.is_live(),
            max_attempts: w.max_attempts,
            ordering: w.ordering.as_str(),
            created_at: w.created_at,
            updated_at: w.updated_at,
            previous_secret_expires_at: w.previous_secret_expires_at,
            secret,
        }
    }
}

/// The most entries a filter list may hold: every event type and `*` fit many times over.
pub(crate) const MAX_FILTER_ENTRIES: usize = 64;

fn parse_events(events: &[String]) -> Result<EventSelector, ApiError> {
    if events.len() > MAX_FILTER_ENTRIES {
        return Err(ApiError::invalid("filter.events", format!("must hold at most {MAX_FILTER_ENTRIES} entries")));
    }
    EventSelector::parse(events.iter().map(String::as_str)).map_err(|e| {
        let message = if e.0.is_empty() {
            "must name at least one event type, or \"*\"".to_owned()
        } else {
            format!(
                "unknown event type `{}`; expected one of {}",
                e.0,
                courier_core::EventType::ALL.map(|t| t.as_str()).join(", ")
            )
        };
        ApiError::invalid("filter.events", message)
    })
}

fn check_max_attempts(n: u32) -> Result<u32, ApiError> {
    if (1..=25).contains(&n) { Ok(n) } else { Err(ApiError::invalid("max_attempts", "must be between 1 and 25")) }
}

fn check_description(d: &Option<String>) -> Result<(), ApiError> {
    match d {
        Some(text) if text.len() > 1024 => Err(ApiError::invalid("description", "must be at most 1024 bytes")),
        // PostgreSQL's text cannot hold NUL: refused here with a 422 rather than failing the insert with a 500.
        Some(text) if text.contains('\0') => Err(ApiError::invalid("description", "must not contain NUL characters")),
        _ => Ok(()),
    }
}

pub(crate) fn parse_webhook_id(text: &str) -> Result<WebhookId, ApiError> {
    // A malformed id cannot name anything: 404, the same answer as another tenant's id.
    WebhookId::parse(text).map_err(|_| ApiError::not_found("webhook"))
}

/// Create a webhook
///
/// The response carries the signing secret; it is never shown again (rotate to get a new one).
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    security(("api_key" = ["webhooks:write"])),
    responses((status = 201, body = WebhookOutput), (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
              (status = 403, body = ErrorResponse), (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse),
              (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse)))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<WebhookOutput>)> {
    let owner = principal.require(Scope::WebhooksWrite)?;
    let url = validate_url("url", &body.url, owner.environment, &state.config.webhooks)?;
    let filter = body.filter.unwrap_or_default();
    let events = match &filter.events {
        None => EventSelector::All,
        Some(names) => parse_events(names)?,
    };
    check_description(&body.description)?;
    let new = NewWebhook {
        url,
        description: body.description,
        events,
        payload: PayloadFilter {
            include_transcript: filter.include_transcript.unwrap_or(false),
            include_metrics: filter.include_metrics.unwrap_or(false),
        },
        max_attempts: check_max_attempts(body.max_attempts.unwrap_or(state.config.webhooks.default_max_attempts))?,
        ordering: body.ordering.map(Into::into).unwrap_or_default(),
    };
    let (webhook, secret) =
        webhooks::create_within_limit(&state.pool, &state.key, owner, new, state.config.webhooks.max_webhooks).await?;
    Ok((StatusCode::CREATED, Json(WebhookOutput::new(webhook, Some(secret.expose().to_owned())))))
}

/// List webhooks
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks", params(PageParams),
    security(("api_key" = ["webhooks:read"])),
    responses((status = 200, body = Page<WebhookOutput>), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
              (status = 422, body = ErrorResponse), (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<WebhookOutput>>> {
    let owner = principal.require(Scope::WebhooksRead)?;
    let limit = page_limit(params.limit)?;
    let before = params
        .cursor
        .map(|c| WebhookId::parse(&c).map_err(|_| ApiError::invalid("cursor", "not a cursor this list returned")))
        .transpose()?;
    let rows = webhooks::list(&state.pool, owner, before.as_ref(), limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |w| w.id.to_string(), |w| WebhookOutput::new(w, None))))
}

/// Get a webhook
#[utoipa::path(get, path = "/api/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "wh_…")),
    security(("api_key" = ["webhooks:read"])),
    responses((status = 200, body = WebhookOutput), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse)))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookOutput>> {
    let owner = principal.require(Scope::WebhooksRead)?;
    let id = parse_webhook_id(&id)?;
    let webhook = webhooks::get(&state.pool, owner, &id).await?.ok_or_else(|| ApiError::not_found("webhook"))?;
    Ok(Json(WebhookOutput::new(webhook, None)))
}

/// Update a webhook
///
/// Only the fields given change. Disabling cancels the webhook's pending deliveries.
#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", tag = "webhooks", request_body = UpdateWebhook,
    params(("id" = String, Path, description = "wh_…")), security(("api_key" = ["webhooks:write"])),
    responses((status = 200, body = WebhookOutput), (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
              (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse), (status = 413, body = ErrorResponse),
              (status = 422, body = ErrorResponse), (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse)))]
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateWebhook>,
) -> ApiResult<Json<WebhookOutput>> {
    let owner = principal.require(Scope::WebhooksWrite)?;
    let id = parse_webhook_id(&id)?;
    let mut details: Vec<ErrorDetail> = Vec::new();
    let mut collect = |r: Result<(), ApiError>| {
        if let Err(e) = r {
            details.extend(e.into_body().details);
        }
    };
    let url = match body.url.as_deref().map(|u| validate_url("url", u, owner.environment, &state.config.webhooks)) {
        Some(Ok(url)) => Some(url),
        Some(Err(e)) => {
            collect(Err(e));
            None
        }
        None => None,
    };
    let filter = body.filter.unwrap_or_default();
    let events = match filter.events.as_deref().map(parse_events) {
        Some(Ok(events)) => Some(events),
        Some(Err(e)) => {
            collect(Err(e));
            None
        }
        None => None,
    };
    if let Some(n) = body.max_attempts {
        collect(check_max_attempts(n).map(|_| ()));
    }
    if let Some(description) = &body.description {
        collect(check_description(description));
    }
    if !details.is_empty() {
        return Err(ApiError::validation(details));
    }
    let turning_off = matches!(body.status, Some(StatusInput::Disabled));
    let patch = WebhookPatch {
        url,
        description: body.description,
        events,
        include_transcript: filter.include_transcript,
        include_metrics: filter.include_metrics,
        max_attempts: body.max_attempts,
        ordering: body.ordering.map(Into::into),
        enabled: body.status.map(|s| matches!(s, StatusInput::Enabled)),
    };
    let mut tx = state.pool.begin().await?;
    let webhook = webhooks::update(&mut tx, owner, &id, patch).await?.ok_or_else(|| ApiError::not_found("webhook"))?;
    if turning_off {
        disabling::cancel_queue(&mut tx, std::slice::from_ref(&id)).await?;
    }
    tx.commit().await?;
    Ok(Json(WebhookOutput::new(webhook, None)))
}

/// Delete a webhook
///
/// Its pending deliveries are cancelled; its delivery log stays readable.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path, description = "wh_…")),
    security(("api_key" = ["webhooks:write"])),
    responses((status = 204), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse)))]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let owner = principal.require(Scope::WebhooksWrite)?;
    let id = parse_webhook_id(&id)?;
    let mut tx = state.pool.begin().await?;
    if !webhooks::delete(&mut *tx, owner, &id).await? {
        return Err(ApiError::not_found("webhook"));
    }
    disabling::cancel_queue(&mut tx, std::slice::from_ref(&id)).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotate a webhook's secret
///
/// The response carries the new secret. The old one keeps signing beside it for the grace period (24 h by default):
/// `X-Webhook-Signature` then carries two `v1=` values, the newest last.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/rotate-secret", tag = "webhooks",
    params(("id" = String, Path, description = "wh_…")), security(("api_key" = ["webhooks:write"])),
    responses((status = 200, body = WebhookOutput), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookOutput>> {
    let owner = principal.require(Scope::WebhooksWrite)?;
    let id = parse_webhook_id(&id)?;
    let grace = chrono::Duration::from_std(state.config.webhooks.rotation_grace).unwrap_or(chrono::Duration::hours(24));
    let (webhook, secret) = webhooks::rotate_secret(&state.pool, &state.key, owner, &id, grace)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    Ok(Json(WebhookOutput::new(webhook, Some(secret.expose().to_owned()))))
}

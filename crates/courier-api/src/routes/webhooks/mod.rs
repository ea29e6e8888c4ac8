//! `/api/v1/webhooks`: a tenant's endpoints.

mod body;
mod destination;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use courier_core::{EventSelector, PayloadFilter, Scope, WebhookId};
use courier_scheduler::webhook_changes::{self, SetStatus};
use courier_store::webhooks::{self, NewWebhook};

pub use body::*;
pub use destination::*;

use super::{Page, PageParams, page_limit};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorResponse};
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;

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
    let rules = &state.config.webhooks;
    let (url, broker) = target_of(body.url, body.destination, owner.environment, rules, true)?
        .ok_or_else(|| ApiError::invalid("url", "give `url` or `destination`"))?;
    let filter = body.filter.unwrap_or_default();
    let events = match &filter.events {
        None => EventSelector::All,
        Some(names) => parse_events(names)?,
    };
    check_description(&body.description)?;
    let headers = body.headers.map(parse_headers).transpose()?.unwrap_or_default();
    check_broker_headers(broker.as_ref(), &headers)?;
    let new = NewWebhook {
        url,
        broker,
        description: body.description,
        events,
        payload: PayloadFilter {
            include_transcript: filter.include_transcript.unwrap_or(false),
            include_metrics: filter.include_metrics.unwrap_or(false),
        },
        max_attempts: check_max_attempts(body.max_attempts.unwrap_or(state.config.webhooks.default_max_attempts))?,
        ordering: body.ordering.map(Into::into).unwrap_or_default(),
        headers,
        rate_limit: body.rate_limit.as_ref().map(check_rate).transpose()?,
    };
    let limit = state.config.webhooks.max_webhooks;
    let (webhook, secret) = webhook_changes::create(&state.pool, &state.key, owner, new, limit).await?;
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
    let rows = webhooks::list(state.reader(), owner, before.as_ref(), limit + 1).await?;
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
    let status = body.status.map(|s| match s {
        StatusInput::Enabled => SetStatus::Enabled,
        StatusInput::Disabled => SetStatus::Disabled,
    });
    let patch = patch_of(body, owner.environment, &state.config.webhooks)?;
    let webhook = webhook_changes::update(&state.pool, &state.key, owner, &id, patch, status).await?;
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
    webhook_changes::delete(&state.pool, owner, &id).await?;
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
    let (webhook, secret) = webhook_changes::rotate_secret(&state.pool, &state.key, owner, &id, grace).await?;
    Ok(Json(WebhookOutput::new(webhook, Some(secret.expose().to_owned()))))
}

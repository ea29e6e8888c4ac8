//! `/api/v1/portal/sessions`: magic links into the tenant portal, minted by the tenant's own backend.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use courier_core::{Scope, Scopes};
use courier_store::portal_sessions::{self, NewSession};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorResponse};
use crate::extract::ApiJson;
use crate::state::AppState;

/// The scopes a portal session may carry: what the portal's pages can do.
pub const PORTAL_SCOPES: [Scope; 4] =
    [Scope::WebhooksRead, Scope::WebhooksWrite, Scope::DeliveriesRead, Scope::DeliveriesReplay];
/// The shortest and longest session one may mint, in seconds (a minute to a day).
pub const EXPIRES_IN: std::ops::RangeInclusive<i64> = 60..=86_400;

/// A portal scope name, for the OpenAPI document.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Only read by the OpenAPI generator.
pub enum PortalScopeName {
    #[serde(rename = "webhooks:read")]
    WebhooksRead,
    #[serde(rename = "webhooks:write")]
    WebhooksWrite,
    #[serde(rename = "deliveries:read")]
    DeliveriesRead,
    #[serde(rename = "deliveries:replay")]
    DeliveriesReplay,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePortalSession {
    /// What the session may do; each must be among the calling key's scopes.
    #[schema(value_type = Vec<PortalScopeName>, min_items = 1)]
    pub scopes: Vec<String>,
    /// Seconds until the session ends: 60 to 86400; 3600 by default.
    #[schema(minimum = 60, maximum = 86400)]
    #[serde(default, deserialize_with = "crate::extract::whole::optional")]
    pub expires_in: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PortalSessionOutput {
    #[schema(example = "ps_01JD3Z6V8Q2N7K4M5P6R7S8T9V")]
    pub id: String,
    /// The magic link: single use, valid for ten minutes (or the session's life, if shorter).
    pub url: String,
    pub scopes: Vec<&'static str>,
    pub expires_at: DateTime<Utc>,
}

fn requested_scopes(principal: &Principal, names: &[String]) -> Result<Scopes, ApiError> {
    if names.is_empty() {
        return Err(ApiError::invalid("scopes", "must name at least one scope"));
    }
    let mut scopes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let scope: Scope = name.parse().map_err(|_| {
            ApiError::invalid(
                format!("scopes[{i}]"),
                "must be webhooks:read, webhooks:write, deliveries:read or deliveries:replay",
            )
        })?;
        if !PORTAL_SCOPES.contains(&scope) {
            return Err(ApiError::invalid(format!("scopes[{i}]"), format!("{scope} grants nothing in the portal")));
        }
        principal.require(scope)?;
        scopes.push(scope);
    }
    Ok(Scopes::new(scopes))
}

/// Create a portal session
///
/// Answers a single-use magic link into the tenant portal for this key's tenant and environment, with a subset of
/// the key's scopes. Hand the link to the user's browser (a redirect, a link or an iframe).
#[utoipa::path(post, path = "/api/v1/portal/sessions", tag = "portal", request_body = CreatePortalSession,
    security(("api_key" = [])),
    responses((status = 201, body = PortalSessionOutput), (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
              (status = 403, body = ErrorResponse), (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse),
              (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse)))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreatePortalSession>,
) -> ApiResult<(StatusCode, Json<PortalSessionOutput>)> {
    let scopes = requested_scopes(&principal, &body.scopes)?;
    let expires_in = body.expires_in.unwrap_or(3600);
    if !EXPIRES_IN.contains(&expires_in) {
        return Err(ApiError::invalid("expires_in", "must be between 60 and 86400 seconds"));
    }
    let new = NewSession { owner: principal.owner, api_key: principal.key_id.clone(), scopes, expires_in };
    let minted = portal_sessions::mint(&state.pool, &new).await?;
    let url = format!("{}/portal/login?token={}", state.config.portal.public_url, minted.login_token);
    let out = PortalSessionOutput {
        id: minted.id.to_string(),
        url,
        scopes: new.scopes.names(),
        expires_at: minted.expires_at,
    };
    Ok((StatusCode::CREATED, Json(out)))
}

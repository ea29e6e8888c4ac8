//! `Authorization: Bearer as_live_…|as_test_…` → the tenant, environment and scopes of the key.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use courier_core::{ApiKeyId, Scope, Scopes};
use courier_store::Owner;
use courier_store::api_keys::{self, KeyLookup};

use crate::error::ApiError;
use crate::state::AppState;

/// Who is calling: proven by a live API key, rate-limited, its use recorded.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: ApiKeyId,
    pub owner: Owner,
    scopes: Scopes,
}

impl Principal {
    /// 403 naming the scope when the key lacks it.
    pub fn require(&self, scope: Scope) -> Result<Owner, ApiError> {
        if self.scopes.contains(scope) { Ok(self.owner) } else { Err(ApiError::forbidden(scope)) }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // No credentials at all is a plain 401: nothing is being guessed, so nothing is charged.
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("missing Authorization header: send `Authorization: Bearer <API key>`")
        })?;
        // A key that fails is charged to the client's address, and once that address used up its bucket the answer
        // is 429 instead of 401. The charge comes after the lookup, so a valid key is never refused for anyone's
        // failures, however many clients share the address (a NAT, a load balancer not in the trusted list).
        let addr = crate::client_addr::client_addr(parts, &state.config.trusted_proxies);
        let failed = |err: ApiError| match state.limiter.failed(addr) {
            Ok(()) => err,
            Err(retry_after) => ApiError::failed_logins(retry_after),
        };
        let presented = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| {
                failed(ApiError::unauthorized("malformed Authorization header: expected `Bearer <API key>`"))
            })?;
        let key = match api_keys::authenticate(&state.priority, presented).await? {
            KeyLookup::Valid(key) => key,
            KeyLookup::Revoked => return Err(failed(ApiError::unauthorized("this API key has been revoked"))),
            KeyLookup::Unknown => return Err(failed(ApiError::unauthorized("invalid API key"))),
        };
        state.limiter.check(&key.id).map_err(ApiError::rate_limited)?;
        state.usage.touch(&key.id);
        let span = tracing::Span::current();
        span.record("tenant", tracing::field::display(key.owner.tenant));
        Ok(Principal { key_id: key.id, owner: key.owner, scopes: key.scopes })
    }
}

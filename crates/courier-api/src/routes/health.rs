//! `/healthz` (the process answers) and `/readyz` (the database answers and is migrated).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, ErrorResponse};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: every supervised loop runs, the database answers and every migration is applied
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = ErrorResponse)))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    if let Some((name, why)) = state.components.down().into_iter().next() {
        return Err(ApiError::retry_later(format!("the {name} loop stopped and is being restarted"), why));
    }
    let latest = courier_store::schema::latest_version();
    let applied = courier_store::schema::applied_version(&state.pool).await.map_err(ApiError::unavailable)?;
    if applied < latest {
        return Err(ApiError::unavailable(format!("migrations pending: applied {applied}, latest {latest}")));
    }
    Ok(Json(Health { status: "ready" }))
}

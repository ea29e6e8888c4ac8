//! Cross-tenant functions for operators (the `courier` CLI). Never reachable from a tenant's API key.

use courier_core::{TenantId, WebhookId};
use sqlx::PgExecutor;

use crate::Result;
use crate::webhooks::DisabledReason;

/// A webhook as operators list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSummary {
    pub id: String,
    pub environment: String,
    pub url: String,
    pub status: String,
    pub disabled_reason: Option<String>,
}

pub async fn list_webhooks(db: impl PgExecutor<'_>, tenant: TenantId) -> Result<Vec<WebhookSummary>> {
    let rows: Vec<(String, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT id, environment, url, status, disabled_reason FROM webhooks
         WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY id",
    )
    .bind(tenant.as_uuid())
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, environment, url, status, disabled_reason)| WebhookSummary {
            id,
            environment,
            url,
            status,
            disabled_reason,
        })
        .collect())
}

/// Enables a webhook or disables it for `reason`; true when it exists.
pub async fn set_webhook_status(
    db: impl PgExecutor<'_>,
    id: &WebhookId,
    disabled: Option<DisabledReason>,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE webhooks SET status = CASE WHEN $2::text IS NULL THEN 'enabled' ELSE 'disabled' END,
            disabled_reason = $2, updated_at = now(),
            -- Re-enabling starts a fresh failure streak.
            failing_since = CASE WHEN $2::text IS NULL THEN NULL ELSE failing_since END,
            exhausted_since_failing = CASE WHEN $2::text IS NULL THEN 0 ELSE exhausted_since_failing END
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id.as_str())
    .bind(disabled.map(DisabledReason::as_str))
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

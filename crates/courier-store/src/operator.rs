//! Cross-tenant reads for operators (the `courier` CLI). Never reachable from a tenant's API key.
//! State changes an operator makes go through the same use cases a tenant's do (`courier_scheduler::webhook_changes`).

use courier_core::{Environment, TenantId, WebhookId};
use sqlx::PgExecutor;

use crate::webhooks::WebhookStatus;
use crate::{Error, Result};

/// A webhook as operators list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSummary {
    pub id: WebhookId,
    pub environment: Environment,
    pub url: String,
    pub status: WebhookStatus,
}

pub async fn list_webhooks(db: impl PgExecutor<'_>, tenant: TenantId) -> Result<Vec<WebhookSummary>> {
    let rows: Vec<(String, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT id, environment, url, status, disabled_reason FROM webhooks
         WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY id",
    )
    .bind(tenant.as_uuid())
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|(id, environment, url, status, reason)| {
            let row = format!("webhook {id}");
            Ok(WebhookSummary {
                id: WebhookId::parse(&id).map_err(Error::corrupt(&row, "id"))?,
                environment: environment.parse().map_err(Error::corrupt(&row, "environment"))?,
                url,
                status: WebhookStatus::from_columns(&status, reason.as_deref())
                    .map_err(Error::corrupt(&row, "status"))?,
            })
        })
        .collect()
}

/// A webhook's URL by id alone, deleted ones included (an old delivery still names it).
pub async fn webhook_url(db: impl PgExecutor<'_>, id: &WebhookId) -> Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT url FROM webhooks WHERE id = $1").bind(id.as_str()).fetch_optional(db).await?)
}

/// Whose a live (not deleted) webhook is, by id alone: an operator acting on a webhook then changes it as its
/// owner would (`courier_scheduler::webhook_changes`).
pub async fn webhook_owner(db: impl PgExecutor<'_>, id: &WebhookId) -> Result<Option<crate::Owner>> {
    let row: Option<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT tenant_id, environment FROM webhooks WHERE id = $1 AND deleted_at IS NULL")
            .bind(id.as_str())
            .fetch_optional(db)
            .await?;
    let Some((tenant, environment)) = row else { return Ok(None) };
    let row = format!("webhook {id}");
    let environment = environment.parse().map_err(Error::corrupt(&row, "environment"))?;
    Ok(Some(crate::Owner { tenant: TenantId::from_uuid(tenant), environment }))
}

//! Webhook endpoints and their signing secrets (sealed at rest): the one owner of the `webhooks` table.
//!
//! This module holds what a tenant does to its webhooks (create, read, update, delete, rotate), each scoped by an
//! [`Owner`]; [`state`] holds the state machine the system drives by id (disable, enable, the failure streak).
//! Whether a webhook receives deliveries is the generated column `active` (migration 0009), so that predicate is
//! written once, in the schema.

mod model;
pub mod state;

pub use model::{
    BrokerDestination, DisabledReason, NewWebhook, Ordering, UnknownOrdering, UnknownReason, Webhook, WebhookPatch,
    WebhookStatus,
};

use chrono::{DateTime, Duration, Utc};
use courier_core::{EventSelector, MasterKey, PayloadFilter, TenantId, WebhookId, WebhookSecret};
use sqlx::{PgConnection, PgExecutor};

use crate::{Error, Owner, Result};

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    tenant_id: uuid::Uuid,
    environment: String,
    url: String,
    destination: Option<serde_json::Value>,
    description: Option<String>,
    event_types: Option<Vec<String>>,
    include_transcript: bool,
    include_metrics: bool,
    max_attempts: i32,
    ordering: String,
    header_names: Vec<String>,
    rate_limit_per_second: Option<i32>,
    status: String,
    disabled_reason: Option<String>,
    previous_secret_expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

macro_rules! columns {
    () => {
        "id, tenant_id, environment, url, destination, description, event_types, include_transcript, include_metrics, max_attempts, \
         ordering, header_names, rate_limit_per_second, status, disabled_reason, previous_secret_expires_at, \
         created_at, updated_at"
    };
}

fn event_type_names(selector: &EventSelector) -> Option<Vec<&'static str>> {
    match selector {
        EventSelector::All => None,
        EventSelector::Only(_) => Some(selector.names()),
    }
}

fn from_row(row: Row) -> Result<Webhook> {
    let row_name = format!("webhook {}", row.id);
    let events = match &row.event_types {
        None => EventSelector::All,
        Some(names) => {
            EventSelector::parse(names.iter().map(String::as_str)).map_err(Error::corrupt(&row_name, "event_types"))?
        }
    };
    let status = WebhookStatus::from_columns(&row.status, row.disabled_reason.as_deref())
        .map_err(Error::corrupt(&row_name, "status"))?;
    Ok(Webhook {
        id: WebhookId::parse(&row.id).map_err(Error::corrupt(&row_name, "id"))?,
        owner: Owner {
            tenant: TenantId::from_uuid(row.tenant_id),
            environment: row.environment.parse().map_err(Error::corrupt(&row_name, "environment"))?,
        },
        url: row.url,
        destination: row.destination,
        description: row.description,
        events,
        payload: PayloadFilter { include_transcript: row.include_transcript, include_metrics: row.include_metrics },
        max_attempts: u32::try_from(row.max_attempts).map_err(Error::corrupt(&row_name, "max_attempts"))?,
        ordering: row.ordering.parse().map_err(Error::corrupt(&row_name, "ordering"))?,
        header_names: row.header_names,
        rate_limit: row
            .rate_limit_per_second
            .map(u32::try_from)
            .transpose()
            .map_err(Error::corrupt(&row_name, "rate_limit_per_second"))?,
        status,
        previous_secret_expires_at: row.previous_secret_expires_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// Creates a webhook with a fresh secret; the secret is returned once and stored only encrypted.
pub async fn create(
    db: impl PgExecutor<'_>,
    key: &MasterKey,
    owner: Owner,
    new: NewWebhook,
) -> Result<(Webhook, WebhookSecret)> {
    let id = WebhookId::generate();
    let secret = WebhookSecret::generate();
    let row: Row = sqlx::query_as(concat!(
        "INSERT INTO webhooks (id, tenant_id, environment, url, description, event_types, include_transcript, \
         include_metrics, max_attempts, secret_ciphertext, ordering, header_names, headers_ciphertext, \
         rate_limit_per_second, destination, destination_ciphertext) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) RETURNING ",
        columns!()
    ))
    .bind(id.as_str())
    .bind(owner.tenant.as_uuid())
    .bind(owner.environment.as_str())
    .bind(&new.url)
    .bind(&new.description)
    .bind(event_type_names(&new.events))
    .bind(new.payload.include_transcript)
    .bind(new.payload.include_metrics)
    .bind(new.max_attempts as i32)
    .bind(key.seal(&id, &secret))
    .bind(new.ordering.as_str())
    .bind(new.headers.names())
    .bind((!new.headers.is_empty()).then(|| key.seal_headers(&id, &new.headers)))
    .bind(new.rate_limit.map(|n| n as i32))
    .bind(new.broker.as_ref().map(|b| &b.shown))
    .bind(new.broker.as_ref().map(|b| key.seal_broker(&id, &b.broker)))
    .fetch_one(db)
    .await?;
    Ok((from_row(row)?, secret))
}

/// [`create`], unless the tenant already has `limit` webhooks (deleted ones not counted, both environments
/// counted): then [`Error::TooManyWebhooks`]. The tenant's row is locked for the count, so concurrent creations
/// cannot pass the limit together.
pub async fn create_within_limit(
    pool: &sqlx::PgPool,
    key: &MasterKey,
    owner: Owner,
    new: NewWebhook,
    limit: u32,
) -> Result<(Webhook, WebhookSecret)> {
    let mut tx = pool.begin().await?;
    // Its own statement: under READ COMMITTED the count that follows sees whatever the previous holder committed.
    sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
        .bind(owner.tenant.as_uuid())
        .execute(&mut *tx)
        .await?;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM webhooks WHERE tenant_id = $1 AND deleted_at IS NULL")
        .bind(owner.tenant.as_uuid())
        .fetch_one(&mut *tx)
        .await?;
    if count >= i64::from(limit) {
        return Err(Error::TooManyWebhooks(limit));
    }
    let created = create(&mut *tx, key, owner, new).await?;
    tx.commit().await?;
    Ok(created)
}

/// The condition that finds one of the owner's webhooks by id (`$1` tenant, `$2` environment, `$3` id).
macro_rules! one_webhook {
    () => {
        "tenant_id = $1 AND environment = $2 AND id = $3 AND deleted_at IS NULL"
    };
}

pub async fn get(db: impl PgExecutor<'_>, owner: Owner, id: &WebhookId) -> Result<Option<Webhook>> {
    one(db, concat!("SELECT ", columns!(), " FROM webhooks WHERE ", one_webhook!()), owner, id).await
}

/// Like [`get`], locking the row until the transaction ends: for a change that depends on what is stored now.
pub async fn get_for_update(conn: &mut PgConnection, owner: Owner, id: &WebhookId) -> Result<Option<Webhook>> {
    one(conn, concat!("SELECT ", columns!(), " FROM webhooks WHERE ", one_webhook!(), " FOR UPDATE"), owner, id).await
}

/// The owner's webhook `id` (not deleted), as `sql` selects it.
async fn one(db: impl PgExecutor<'_>, sql: &'static str, owner: Owner, id: &WebhookId) -> Result<Option<Webhook>> {
    let row: Option<Row> = sqlx::query_as(sql)
        .bind(owner.tenant.as_uuid())
        .bind(owner.environment.as_str())
        .bind(id.as_str())
        .fetch_optional(db)
        .await?;
    row.map(from_row).transpose()
}

/// The owner's webhook's current signing secret, opened: for a `courier listen` session, which shows it to the
/// developer whose key may rotate it anyway (`webhooks:write`). `None` when the webhook does not exist.
pub async fn signing_secret(
    db: impl PgExecutor<'_>,
    key: &MasterKey,
    owner: Owner,
    id: &WebhookId,
) -> Result<Option<WebhookSecret>> {
    let sealed: Option<Vec<u8>> =
        sqlx::query_scalar(concat!("SELECT secret_ciphertext FROM webhooks WHERE ", one_webhook!()))
            .bind(owner.tenant.as_uuid())
            .bind(owner.environment.as_str())
            .bind(id.as_str())
            .fetch_optional(db)
            .await?;
    sealed
        .map(|sealed| key.open(id, &sealed).map_err(Error::corrupt(format!("webhook {id}"), "secret_ciphertext")))
        .transpose()
}

/// Newest first; `before` is the last id of the previous page.
pub async fn list(
    db: impl PgExecutor<'_>,
    owner: Owner,
    before: Option<&WebhookId>,
    limit: u32,
) -> Result<Vec<Webhook>> {
    let rows: Vec<Row> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM webhooks WHERE tenant_id = $1 AND environment = $2 AND deleted_at IS NULL \
         AND ($3::text IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
    ))
    .bind(owner.tenant.as_uuid())
    .bind(owner.environment.as_str())
    .bind(before.map(WebhookId::as_str))
    .bind(i64::from(limit))
    .fetch_all(db)
    .await?;
    rows.into_iter().map(from_row).collect()
}

/// Applies `patch`; `None` when the webhook does not exist (for this owner). A patch cannot turn a webhook on or
/// off: that is [`state`]'s, through the scheduler's `webhook_changes`, which cancels the queue with it.
pub async fn update(
    conn: &mut PgConnection,
    key: &MasterKey,
    owner: Owner,
    id: &WebhookId,
    patch: WebhookPatch,
) -> Result<Option<Webhook>> {
    let found: Option<String> = sqlx::query_scalar(
        "UPDATE webhooks SET
            url = COALESCE($4, url),
            description = CASE WHEN $5 THEN $6 ELSE description END,
            event_types = CASE WHEN $7 THEN $8 ELSE event_types END,
            include_transcript = COALESCE($9, include_transcript),
            include_metrics = COALESCE($10, include_metrics),
            max_attempts = COALESCE($11, max_attempts),
            ordering = COALESCE($12, ordering),
            header_names = CASE WHEN $13 THEN $14 ELSE header_names END,
            headers_ciphertext = CASE WHEN $13 THEN $15 ELSE headers_ciphertext END,
            rate_limit_per_second = CASE WHEN $16 THEN $17 ELSE rate_limit_per_second END,
            destination = CASE WHEN $18 THEN $19 ELSE destination END,
            destination_ciphertext = CASE WHEN $18 THEN $20 ELSE destination_ciphertext END,
            updated_at = now()
         WHERE tenant_id = $1 AND environment = $2 AND id = $3 AND deleted_at IS NULL RETURNING id",
    )
    .bind(owner.tenant.as_uuid())
    .bind(owner.environment.as_str())
    .bind(id.as_str())
    .bind(patch.url)
    .bind(patch.description.is_some())
    .bind(patch.description.flatten())
    .bind(patch.events.is_some())
    .bind(patch.events.as_ref().and_then(event_type_names))
    .bind(patch.include_transcript)
    .bind(patch.include_metrics)
    .bind(patch.max_attempts.map(|n| n as i32))
    .bind(patch.ordering.map(Ordering::as_str))
    .bind(patch.headers.is_some())
    .bind(patch.headers.as_ref().map(|h| h.names()).unwrap_or_default())
    .bind(patch.headers.as_ref().filter(|h| !h.is_empty()).map(|h| key.seal_headers(id, h)))
    .bind(patch.rate_limit.is_some())
    .bind(patch.rate_limit.flatten().map(|n| n as i32))
    .bind(patch.broker.is_some())
    .bind(patch.broker.as_ref().and_then(|b| b.as_ref()).map(|b| &b.shown))
    .bind(patch.broker.as_ref().and_then(|b| b.as_ref()).map(|b| key.seal_broker(id, &b.broker)))
    .fetch_optional(&mut *conn)
    .await?;
    if found.is_none() {
        return Ok(None);
    }
    get(&mut *conn, owner, id).await
}

/// Soft-deletes a webhook (its delivery log stays readable); true when it existed.
pub async fn delete(db: impl PgExecutor<'_>, owner: Owner, id: &WebhookId) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE webhooks SET deleted_at = now(), updated_at = now()
         WHERE tenant_id = $1 AND environment = $2 AND id = $3 AND deleted_at IS NULL",
    )
    .bind(owner.tenant.as_uuid())
    .bind(owner.environment.as_str())
    .bind(id.as_str())
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Replaces the secret; the old one keeps signing beside the new one for `grace`. Returns the new secret once.
pub async fn rotate_secret(
    db: impl PgExecutor<'_>,
    key: &MasterKey,
    owner: Owner,
    id: &WebhookId,
    grace: Duration,
) -> Result<Option<(Webhook, WebhookSecret)>> {
    let secret = WebhookSecret::generate();
    let row: Option<Row> = sqlx::query_as(concat!(
        "UPDATE webhooks SET previous_secret_ciphertext = secret_ciphertext,
            previous_secret_expires_at = now() + $5, secret_ciphertext = $4, updated_at = now()
         WHERE tenant_id = $1 AND environment = $2 AND id = $3 AND deleted_at IS NULL RETURNING ",
        columns!()
    ))
    .bind(owner.tenant.as_uuid())
    .bind(owner.environment.as_str())
    .bind(id.as_str())
    .bind(key.seal(id, &secret))
    .bind(grace)
    .fetch_optional(db)
    .await?;
    Ok(row.map(from_row).transpose()?.map(|webhook| (webhook, secret)))
}

//! Changing a webhook, as a tenant (through the API or the portal) or an operator (the CLI) asks: each change is
//! one function that opens, uses and commits its own transaction, so every face of Courier changes a webhook the
//! same way. Turning a webhook off also cancels its queue and announces `webhook.disabled` (`disabling`), in the
//! same transaction; deleting it cancels its queue.

use courier_core::{MasterKey, WebhookId, WebhookSecret};
use courier_store::Owner;
use courier_store::webhooks::{self, DisabledReason, NewWebhook, Webhook, WebhookPatch};
use sqlx::{PgConnection, PgPool};

use crate::disabling;

/// The status a tenant or operator sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetStatus {
    Enabled,
    /// Disabled by hand (`DisabledReason::Manual`): the queue is cancelled.
    Disabled,
}

/// Why a change was refused; infrastructure failures are [`crate::Error`].
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("no such webhook")]
    NotFound,
    /// Custom header values are credentials for one receiver (an API gateway's key): a URL moving to another
    /// origin does not take them along unless they are given again, so a key that may edit webhooks cannot
    /// redirect a credential it cannot read to a host it controls.
    #[error(
        "the URL moves to another origin: send `headers` again with it (or `{{}}` to drop them); custom header \
         values never follow a webhook to a new host"
    )]
    HeadersStayBehind,
    #[error(transparent)]
    Failed(#[from] crate::Error),
}

impl From<courier_store::Error> for Refused {
    fn from(err: courier_store::Error) -> Self {
        Refused::Failed(err.into())
    }
}

impl From<sqlx::Error> for Refused {
    fn from(err: sqlx::Error) -> Self {
        Refused::Failed(err.into())
    }
}

/// Creates a webhook within the tenant's limit (`courier_store::Error::TooManyWebhooks` past it); the secret
/// is shown once, in the answer.
pub async fn create(
    pool: &PgPool,
    key: &MasterKey,
    owner: Owner,
    new: NewWebhook,
    limit: u32,
) -> crate::Result<(Webhook, WebhookSecret)> {
    Ok(webhooks::create_within_limit(pool, key, owner, new, limit).await?)
}

/// Applies `patch` and, when given, `status`, in one transaction.
pub async fn update(
    pool: &PgPool,
    key: &MasterKey,
    owner: Owner,
    id: &WebhookId,
    patch: WebhookPatch,
    status: Option<SetStatus>,
) -> Result<Webhook, Refused> {
    let mut tx = pool.begin().await?;
    if let Some(url) = &patch.url
        && patch.headers.is_none()
    {
        let current = webhooks::get_for_update(&mut tx, owner, id).await?.ok_or(Refused::NotFound)?;
        if !current.header_names.is_empty() && !same_origin(&current.url, url) {
            return Err(Refused::HeadersStayBehind);
        }
    }
    let mut webhook = webhooks::update(&mut tx, key, owner, id, patch).await?.ok_or(Refused::NotFound)?;
    if let Some(status) = status {
        webhook = apply_status(&mut tx, owner, id, status).await?.webhook;
    }
    tx.commit().await?;
    Ok(webhook)
}

/// A webhook whose status was set, and how many of its queued deliveries that cancelled.
#[derive(Debug)]
pub struct StatusSet {
    pub webhook: Webhook,
    pub cancelled: u64,
}

/// Turns a webhook on (with a fresh failure streak) or off (its queue cancelled, `webhook.disabled` announced).
pub async fn set_status(pool: &PgPool, owner: Owner, id: &WebhookId, status: SetStatus) -> Result<StatusSet, Refused> {
    let mut tx = pool.begin().await?;
    webhooks::get_for_update(&mut tx, owner, id).await?.ok_or(Refused::NotFound)?;
    let set = apply_status(&mut tx, owner, id, status).await?;
    tx.commit().await?;
    Ok(set)
}

/// The status change of a webhook the caller already found as `owner`'s (the state machine addresses webhooks by
/// id), and the webhook as it is then.
async fn apply_status(
    conn: &mut PgConnection,
    owner: Owner,
    id: &WebhookId,
    status: SetStatus,
) -> Result<StatusSet, Refused> {
    let one = std::slice::from_ref(id);
    let cancelled = match status {
        SetStatus::Enabled => {
            webhooks::state::enable(&mut *conn, one).await?;
            0
        }
        SetStatus::Disabled => disabling::disable(&mut *conn, one, DisabledReason::Manual).await?.cancelled,
    };
    let webhook = webhooks::get(&mut *conn, owner, id).await?.ok_or(Refused::NotFound)?;
    Ok(StatusSet { webhook, cancelled })
}

/// Soft-deletes a webhook (its delivery log stays readable) and cancels its queue.
pub async fn delete(pool: &PgPool, owner: Owner, id: &WebhookId) -> Result<(), Refused> {
    let mut tx = pool.begin().await?;
    if !webhooks::delete(&mut *tx, owner, id).await? {
        return Err(Refused::NotFound);
    }
    disabling::cancel_queue(&mut tx, std::slice::from_ref(id)).await?;
    tx.commit().await?;
    Ok(())
}

/// A new secret, returned once; the old one keeps signing beside it for `grace`.
pub async fn rotate_secret(
    pool: &PgPool,
    key: &MasterKey,
    owner: Owner,
    id: &WebhookId,
    grace: chrono::Duration,
) -> Result<(Webhook, WebhookSecret), Refused> {
    webhooks::rotate_secret(pool, key, owner, id, grace).await?.ok_or(Refused::NotFound)
}

/// Whether two URLs share scheme, host and port (an unparsable one shares nothing).
fn same_origin(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

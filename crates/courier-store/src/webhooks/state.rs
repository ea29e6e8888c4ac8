//! A webhook's state machine, driven by id: `enabled` ⇄ `disabled(reason)`, and the failure streak that
//! auto-disable reads.
//!
//! These are the only statements that change `status`, `disabled_reason`, `failing_since` and
//! `exhausted_since_failing`. They address webhooks by id alone because their callers already proved ownership
//! (a tenant's PATCH goes through [`super::update`]) or act for the system (a receiver's 410, the sweep, the
//! operator's CLI); no API route reaches them directly. Each takes a connection so the caller cancels the
//! webhook's queue in the same transaction (`courier_scheduler::disabling`).

use std::time::Duration;

use courier_core::WebhookId;
use sqlx::PgConnection;

use super::{DisabledReason, WebhookStatus};
use crate::{Error, Result};

fn id_strs(ids: &[WebhookId]) -> Vec<&str> {
    ids.iter().map(WebhookId::as_str).collect()
}

fn parse_ids(ids: Vec<String>) -> Result<Vec<WebhookId>> {
    ids.into_iter().map(|id| WebhookId::parse(&id).map_err(Error::corrupt(format!("webhook {id}"), "id"))).collect()
}

/// What [`disable`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disabled {
    /// Every id that exists (deleted ones excluded), whichever state it was in.
    pub existing: Vec<WebhookId>,
    /// Those that were enabled until now.
    pub newly: Vec<WebhookId>,
}

/// Disables these webhooks for `reason`; one already disabled keeps the reason it was first disabled for.
pub async fn disable(conn: &mut PgConnection, ids: &[WebhookId], reason: DisabledReason) -> Result<Disabled> {
    let done: Vec<(String, bool)> = sqlx::query_as(
        "WITH before AS (
            SELECT id, status = $3 AS was_enabled FROM webhooks
             WHERE id = ANY ($1) AND deleted_at IS NULL FOR UPDATE
         )
         UPDATE webhooks w SET status = $4, disabled_reason = COALESCE(w.disabled_reason, $2),
                updated_at = now()
           FROM before WHERE w.id = before.id
         RETURNING w.id, before.was_enabled",
    )
    .bind(id_strs(ids))
    .bind(reason.as_str())
    .bind(WebhookStatus::Enabled.as_str())
    .bind(WebhookStatus::Disabled(reason).as_str())
    .fetch_all(conn)
    .await?;
    let newly = done.iter().filter(|(_, was)| *was).map(|(id, _)| id.clone()).collect();
    Ok(Disabled { existing: parse_ids(done.into_iter().map(|(id, _)| id).collect())?, newly: parse_ids(newly)? })
}

/// Enables these webhooks with a fresh failure streak; returns the ids that exist (deleted ones excluded).
pub async fn enable(conn: &mut PgConnection, ids: &[WebhookId]) -> Result<Vec<WebhookId>> {
    let done: Vec<String> = sqlx::query_scalar(
        "UPDATE webhooks SET status = $2, disabled_reason = NULL, failing_since = NULL,
                exhausted_since_failing = 0, updated_at = now()
         WHERE id = ANY ($1) AND deleted_at IS NULL RETURNING id",
    )
    .bind(id_strs(ids))
    .bind(WebhookStatus::Enabled.as_str())
    .fetch_all(conn)
    .await?;
    parse_ids(done)
}

/// Disables (reason `failing`) every active webhook whose deliveries have all failed for good for longer than
/// `after`, with at least `min_exhausted` of them; returns which. `skew` shifts the database's clock (zero in
/// production; tests step it instead of sleeping).
pub async fn disable_failing(
    conn: &mut PgConnection,
    after: Duration,
    min_exhausted: u32,
    skew: Duration,
) -> Result<Vec<WebhookId>> {
    let done: Vec<String> = sqlx::query_scalar(
        "UPDATE webhooks SET status = $4, disabled_reason = $5, updated_at = now()
         WHERE active AND failing_since <= now() + $3 - $1 AND exhausted_since_failing >= $2
         RETURNING id",
    )
    .bind(after)
    .bind(min_exhausted as i32)
    .bind(skew)
    .bind(WebhookStatus::Disabled(DisabledReason::Failing).as_str())
    .bind(DisabledReason::Failing.as_str())
    .fetch_all(conn)
    .await?;
    parse_ids(done)
}

/// The statement, for `concat!`, that ends the failure streak of the webhooks `$from` names (a relation of webhook
/// ids, spelled as SQL, in one or more pieces): the scheduler's record statement embeds it as a CTE, so a delivery
/// that succeeded ends its webhook's streak in the statement that records it (before that transaction adds any
/// exhausted delivery of the same batch, which then starts a new streak). The ids go through an array, as they did
/// when this was a statement of its own: an index scan takes an array's keys in order, so two recorders lock the
/// webhooks they share in one order. Healthy webhooks have no streak, so a success writes nothing for them.
#[macro_export]
macro_rules! reset_failure_streak {
    ($($from:literal),+) => {
        concat!(
            "UPDATE webhooks SET failing_since = NULL, exhausted_since_failing = 0
              WHERE id = ANY (ARRAY(SELECT * FROM ",
            $($from),+,
            ")) AND failing_since IS NOT NULL"
        )
    };
}

/// Starts or lengthens failure streaks: each id in `exhausted` once per delivery that failed for good. (A success
/// ends its webhook's streak in the record statement, [`reset_failure_streak`].)
pub async fn track_failures(conn: &mut PgConnection, exhausted: &[&WebhookId], skew: Duration) -> Result<()> {
    if exhausted.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = exhausted.iter().map(|id| id.as_str()).collect();
    sqlx::query(
        "UPDATE webhooks w SET failing_since = COALESCE(w.failing_since, now() + $2),
                exhausted_since_failing = w.exhausted_since_failing + f.n
           FROM (SELECT id, count(*)::int AS n FROM unnest($1::text[]) AS id GROUP BY id) AS f
          WHERE w.id = f.id",
    )
    .bind(&ids)
    .bind(skew)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

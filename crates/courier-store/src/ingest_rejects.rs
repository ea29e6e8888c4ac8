//! Kafka records ingest set aside (migration 0025): recorded once per offset, listed newest first for
//! `courier ingest rejects`, pruned with the history they would have joined.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::Result;

/// How much of a record's value is kept to recognise it by.
pub const FIRST_BYTES: usize = 256;

/// A record set aside: where it was and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// `not_json`, `invalid`, `too_large`, `no_tenant`, `unknown_tenant`, `unknown_environment`, `conflict` or
    /// `unreadable`.
    pub reason: &'static str,
    pub message: String,
    /// At most [`FIRST_BYTES`] of its value.
    pub first_bytes: Vec<u8>,
    /// The tenant its header named, when it named one.
    pub tenant: Option<String>,
}

/// A reject as listed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Listed {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
    pub message: String,
    pub first_bytes: Vec<u8>,
    pub tenant_id: Option<String>,
    pub rejected_at: DateTime<Utc>,
}

/// Records `rejects` in one statement; an offset already recorded (read again after a crash) is kept as it was.
pub async fn record(db: impl PgExecutor<'_>, rejects: &[Reject]) -> Result<()> {
    if rejects.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&Reject) -> String| rejects.iter().map(f).collect::<Vec<String>>();
    sqlx::query(
        r#"INSERT INTO ingest_rejects (topic, "partition", "offset", reason, message, first_bytes, tenant_id)
           SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[], $6::bytea[], $7::text[])
           ON CONFLICT (topic, "partition", "offset") DO NOTHING"#,
    )
    .bind(column(|r| r.topic.clone()))
    .bind(rejects.iter().map(|r| r.partition).collect::<Vec<i32>>())
    .bind(rejects.iter().map(|r| r.offset).collect::<Vec<i64>>())
    .bind(column(|r| r.reason.to_owned()))
    .bind(column(|r| r.message.clone()))
    .bind(rejects.iter().map(|r| r.first_bytes[..r.first_bytes.len().min(FIRST_BYTES)].to_vec()).collect::<Vec<_>>())
    .bind(rejects.iter().map(|r| r.tenant.clone()).collect::<Vec<Option<String>>>())
    .execute(db)
    .await?;
    Ok(())
}

/// The newest `limit` rejects.
pub async fn list(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<Listed>> {
    Ok(sqlx::query_as(
        r#"SELECT topic, "partition" AS partition, "offset" AS offset, reason, message, first_bytes, tenant_id, rejected_at
           FROM ingest_rejects ORDER BY rejected_at DESC, topic, "partition", "offset" DESC LIMIT $1"#,
    )
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Deletes rejects older than `days`.
pub async fn prune(db: impl PgExecutor<'_>, days: u32) -> Result<u64> {
    let deleted = sqlx::query("DELETE FROM ingest_rejects WHERE rejected_at < now() - make_interval(days => $1)")
        .bind(i32::try_from(days).unwrap_or(i32::MAX))
        .execute(db)
        .await?;
    Ok(deleted.rows_affected())
}

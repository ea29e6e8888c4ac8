//! PostgreSQL's work per delivery in a scenario: rows written, WAL bytes and commits, from the server's own
//! counters around the load, and the slowest claim statement (from `pg_stat_statements`, when the cluster loads it).
//!
//! Rows and commits are the scenario's database's (`pg_stat_database`); WAL is the cluster's, so it holds only
//! while scenarios run one at a time, as they do.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

/// Identifies the claim statement in `pg_stat_statements` (every version of the claim locks its rows this way).
const CLAIM_MARKER: &str = "%FOR UPDATE OF c SKIP LOCKED%";

/// The counters at one moment.
pub struct Snapshot {
    rows: i64,
    commits: i64,
    wal_lsn: String,
}

/// Backends flush their counters to the shared statistics about once a second (PostgreSQL 15).
const STATS_FLUSH: Duration = Duration::from_millis(1_200);

pub async fn snapshot(url: &str) -> Snapshot {
    tokio::time::sleep(STATS_FLUSH).await;
    let mut conn = PgConnection::connect(url).await.expect("connect");
    let (rows, commits, wal_lsn): (i64, i64, String) = sqlx::query_as(
        "SELECT (tup_inserted + tup_updated + tup_deleted)::int8, xact_commit::int8, pg_current_wal_lsn()::text
           FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut conn)
    .await
    .expect("pg_stat_database");
    Snapshot { rows, commits, wal_lsn }
}

/// The work done since `before`, divided by the deliveries made, and the slowest claim of the scenario so far.
pub async fn since(url: &str, before: &Snapshot, deliveries: usize) -> Value {
    let after = snapshot(url).await;
    let mut conn = PgConnection::connect(url).await.expect("connect");
    let wal: f64 = sqlx::query_scalar("SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::float8")
        .bind(&after.wal_lsn)
        .bind(&before.wal_lsn)
        .fetch_one(&mut conn)
        .await
        .expect("wal diff");
    let per = |x: f64| x / deliveries.max(1) as f64;
    json!({
        "rows_per_delivery": per((after.rows - before.rows) as f64),
        "wal_bytes_per_delivery": per(wal),
        "commits_per_delivery": per((after.commits - before.commits) as f64),
        "slowest_claim_ms": slowest_claim(&mut conn).await,
    })
}

/// The longest any claim took in this database, or null when `pg_stat_statements` is not loaded.
async fn slowest_claim(conn: &mut PgConnection) -> Option<f64> {
    let loaded: String = sqlx::query_scalar("SHOW shared_preload_libraries").fetch_one(&mut *conn).await.ok()?;
    if !loaded.contains("pg_stat_statements") {
        return None;
    }
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(&mut *conn).await.ok()?;
    sqlx::query_scalar(
        "SELECT max(max_exec_time) FROM pg_stat_statements
          WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query LIKE $1",
    )
    .bind(CLAIM_MARKER)
    .fetch_one(&mut *conn)
    .await
    .ok()
    .flatten()
}

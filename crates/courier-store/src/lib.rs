//! Postgres persistence of tenants, API keys, webhooks and events.
//!
//! Every function that reads or writes a tenant's objects takes an [`Owner`], so a query that forgets the tenant
//! does not compile. Functions take `impl PgExecutor<'_>` (or a `&mut PgConnection` when they run several statements)
//! so callers compose them inside their own transactions.
//! Operator-only functions that cross tenants live in the [`operator`] module, named as such.

pub mod api_keys;
pub mod cluster;
pub mod events;
pub mod ingest_rejects;
pub mod operator;
pub mod portal_sessions;
pub mod schema;
pub mod tenants;
pub mod webhooks;

use courier_core::{Environment, TenantId};

/// Every migration in `migrations/`, the scheduler's tables included: one schema, one migrator.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Who a request acts for: a tenant in one environment, as proven by an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub tenant: TenantId,
    pub environment: Environment,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("stored data is corrupt: {row}, column {column}")]
    Corrupt {
        row: String,
        column: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("the tenant already has {0} webhooks, its limit")]
    TooManyWebhooks(u32),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any error, as the cause of another.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Error {
    /// For `map_err`: a value of `row` in `column` that does not parse, keeping why as the source.
    pub fn corrupt<E: Into<BoxError>>(row: impl std::fmt::Display, column: &'static str) -> impl FnOnce(E) -> Error {
        let row = row.to_string();
        move |source| Error::Corrupt { row, column, source: source.into() }
    }
}

/// True for failures of the database rather than of a statement or its rows, after which the same statement may
/// succeed: connection loss (class 08, an I/O or TLS error, a protocol break), the server shutting down or in
/// recovery (57P01, 57P03, and the rest of class 57, a statement timeout included), resources (53), and
/// serialization or deadlock (40), and an exhausted or closed pool. The API answers these 503 with `Retry-After`;
/// the recorder retries them.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            let code = db.code();
            let class = code.as_deref().map(|c| &c[..c.len().min(2)]);
            // 25006: a read-only session (a standby behind a proxy or a moved name), which `cluster` leaves.
            matches!(class, Some("08" | "40" | "53" | "57")) || code.as_deref() == Some("25006")
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

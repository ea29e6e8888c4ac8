//! Postgres persistence of tenants, API keys, webhooks and events.
//!
//! Every function that reads or writes a tenant's objects takes an [`Owner`], so a query that forgets the tenant
//! does not compile. Functions take `impl PgExecutor<'_>` (or a `&mut PgConnection` when they run several statements)
//! so callers compose them inside their own transactions.
//! Operator-only functions that cross tenants live in the [`operator`] module, named as such.

pub mod api_keys;
pub mod crypto;
pub mod events;
pub mod operator;
pub mod tenants;
pub mod webhooks;

use courier_core::{Environment, TenantId};

pub use crypto::MasterKey;

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
    #[error("a stored webhook secret could not be decrypted; is COURIER_SECRET_KEY the key it was written with?")]
    Decrypt,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

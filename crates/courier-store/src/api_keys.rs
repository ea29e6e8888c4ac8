//! API keys: `as_live_…` / `as_test_…`, shown once, stored as SHA-256 and a display prefix.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use courier_core::{ApiKeyId, Environment, Scopes, TenantId};
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;
use subtle::ConstantTimeEq;

use crate::{Error, Owner, Result};

/// How many leading characters of a key are kept to recognise it in listings (`as_live_AbCd`).
const DISPLAY_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub owner: Owner,
    pub display_prefix: String,
    pub scopes: Scopes,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A key just created: the only time its full text exists.
pub struct CreatedKey {
    pub key: ApiKey,
    pub plaintext: String,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey").field("key", &self.key).field("plaintext", &"[redacted]").finish()
    }
}

/// What a presented key turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLookup {
    Valid(ApiKey),
    Revoked,
    Unknown,
}

fn hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    tenant_id: uuid::Uuid,
    environment: String,
    display_prefix: String,
    scopes: Vec<String>,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
}

macro_rules! columns {
    () => {
        "id, tenant_id, environment, display_prefix, scopes, created_at, revoked_at, last_used_at"
    };
}

fn from_row(row: Row) -> Result<ApiKey> {
    let row_name = format!("api key {}", row.id);
    Ok(ApiKey {
        owner: Owner {
            tenant: TenantId::from_uuid(row.tenant_id),
            environment: row.environment.parse().map_err(Error::corrupt(&row_name, "environment"))?,
        },
        scopes: Scopes::parse_list(&row.scopes.join(",")).map_err(Error::corrupt(&row_name, "scopes"))?,
        id: ApiKeyId::parse(&row.id).map_err(Error::corrupt(&row_name, "id"))?,
        display_prefix: row.display_prefix,
        created_at: row.created_at,
        revoked_at: row.revoked_at,
        last_used_at: row.last_used_at,
    })
}

pub async fn create(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    environment: Environment,
    scopes: &Scopes,
) -> Result<CreatedKey> {
    let mut random = [0u8; 24];
    rand::fill(&mut random);
    let plaintext = format!("{}{}", environment.key_prefix(), URL_SAFE_NO_PAD.encode(random));
    let scopes: Vec<&str> = scopes.names();
    let row: Row = sqlx::query_as(concat!(
        "INSERT INTO api_keys (id, tenant_id, environment, key_hash, display_prefix, scopes)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
        columns!()
    ))
    .bind(ApiKeyId::generate().as_str())
    .bind(tenant.as_uuid())
    .bind(environment.as_str())
    .bind(hash(&plaintext))
    .bind(&plaintext[..DISPLAY_LEN])
    .bind(&scopes)
    .fetch_one(db)
    .await?;
    Ok(CreatedKey { key: from_row(row)?, plaintext })
}

/// Looks a presented key up by its hash. Keys of the wrong shape are `Unknown` without touching the database.
pub async fn authenticate(db: impl PgExecutor<'_>, presented: &str) -> Result<KeyLookup> {
    let well_formed = (presented.starts_with("as_live_") || presented.starts_with("as_test_"))
        && presented.len() <= 128
        && presented.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !well_formed {
        return Ok(KeyLookup::Unknown);
    }
    let digest = hash(presented);
    #[derive(sqlx::FromRow)]
    struct Hashed {
        key_hash: Vec<u8>,
        #[sqlx(flatten)]
        row: Row,
    }
    let found: Option<Hashed> =
        sqlx::query_as(concat!("SELECT key_hash, ", columns!(), " FROM api_keys WHERE key_hash = $1"))
            .bind(&digest)
            .fetch_optional(db)
            .await?;
    let row = found.map(|h| (h.key_hash, h.row));
    let Some((stored_hash, row)) = row else {
        return Ok(KeyLookup::Unknown);
    };
    // The index lookup already matched; compare again in constant time so no code path branches on a partial match.
    if !bool::from(stored_hash.ct_eq(&digest)) {
        return Ok(KeyLookup::Unknown);
    }
    let key = from_row(row)?;
    if key.revoked_at.is_some() {
        return Ok(KeyLookup::Revoked);
    }
    // The key's own prefix must agree with its stored environment.
    if !presented.starts_with(key.owner.environment.key_prefix()) {
        return Ok(KeyLookup::Unknown);
    }
    Ok(KeyLookup::Valid(key))
}

/// Revokes a key; true when it existed and was live.
pub async fn revoke(db: impl PgExecutor<'_>, id: &ApiKeyId) -> Result<bool> {
    let done = sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
        .bind(id.as_str())
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn list(db: impl PgExecutor<'_>, tenant: TenantId) -> Result<Vec<ApiKey>> {
    let rows: Vec<Row> =
        sqlx::query_as(concat!("SELECT ", columns!(), " FROM api_keys WHERE tenant_id = $1 ORDER BY id"))
            .bind(tenant.as_uuid())
            .fetch_all(db)
            .await?;
    rows.into_iter().map(from_row).collect()
}

/// Records that these keys were used at `at`, in one statement; the API calls it for a batch of requests at once.
pub async fn mark_used(db: impl PgExecutor<'_>, ids: &[ApiKeyId], at: DateTime<Utc>) -> Result<()> {
    let ids: Vec<&str> = ids.iter().map(ApiKeyId::as_str).collect();
    sqlx::query(
        "UPDATE api_keys SET last_used_at = $2
         WHERE id = ANY($1) AND (last_used_at IS NULL OR last_used_at < $2)",
    )
    .bind(&ids)
    .bind(at)
    .execute(db)
    .await?;
    Ok(())
}

//! Tenant portal sessions (DESIGN.md §3.7): an API key mints one for its own tenant, environment and a subset of its
//! scopes; the login token in the magic link is spent once and becomes the session cookie's token.
//!
//! Only SHA-256 digests of both tokens are stored, so a database dump opens no portal. A session ends at its expiry,
//! when it signs out, or when the key that minted it is revoked.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use courier_core::{ApiKeyId, PortalSessionId, Scopes, TenantId};
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;

use crate::{Error, Owner, Result};

/// How long a magic link may wait before it is used; the session it opens lasts as long as it was minted for.
pub const LOGIN_TTL_SECS: i64 = 10 * 60;

/// The prefix of a login token, so one is recognisable in a log or a chat message.
const LOGIN_PREFIX: &str = "pl_";

/// A session a key asks for.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub owner: Owner,
    pub api_key: ApiKeyId,
    pub scopes: Scopes,
    /// Seconds from now until the session ends.
    pub expires_in: i64,
}

/// A session just minted: the only time its login token exists in clear.
pub struct Minted {
    pub id: PortalSessionId,
    pub login_token: String,
    pub expires_at: DateTime<Utc>,
}

/// A live session: whose it is and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: PortalSessionId,
    pub owner: Owner,
    pub scopes: Scopes,
    pub expires_at: DateTime<Utc>,
}

/// A login token spent: the session, and the cookie token that now stands for it (its only appearance in clear).
pub struct Entered {
    pub session: Session,
    pub cookie_token: String,
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn random_token(prefix: &str) -> String {
    let mut random = [0u8; 32];
    rand::fill(&mut random);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random))
}

/// Tokens we mint are short and URL-safe; anything else is refused before a lookup.
fn well_formed(token: &str) -> bool {
    (20..=128).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    tenant_id: uuid::Uuid,
    environment: String,
    scopes: Vec<String>,
    expires_at: DateTime<Utc>,
}

fn from_row(row: Row) -> Result<Session> {
    let row_name = format!("portal session {}", row.id);
    Ok(Session {
        owner: Owner {
            tenant: TenantId::from_uuid(row.tenant_id),
            environment: row.environment.parse().map_err(Error::corrupt(&row_name, "environment"))?,
        },
        scopes: Scopes::parse_list(&row.scopes.join(",")).map_err(Error::corrupt(&row_name, "scopes"))?,
        id: PortalSessionId::parse(&row.id).map_err(Error::corrupt(&row_name, "id"))?,
        expires_at: row.expires_at,
    })
}

/// Stores a new session and forgets the tenant's sessions that ended over a day ago, in one transaction of its
/// own (the API calls this, and nothing else, to mint a portal link).
pub async fn mint(pool: &sqlx::PgPool, new: &NewSession) -> Result<Minted> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM portal_sessions WHERE tenant_id = $1 AND expires_at < now() - interval '1 day'")
        .bind(new.owner.tenant.as_uuid())
        .execute(&mut *tx)
        .await?;
    let id = PortalSessionId::generate();
    let login_token = random_token(LOGIN_PREFIX);
    let (expires_at,): (DateTime<Utc>,) = sqlx::query_as(
        "INSERT INTO portal_sessions (id, tenant_id, environment, api_key_id, scopes, login_hash, login_expires_at,
                                      expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => least($7, $8)),
                 now() + make_interval(secs => $8))
         RETURNING expires_at",
    )
    .bind(id.as_str())
    .bind(new.owner.tenant.as_uuid())
    .bind(new.owner.environment.as_str())
    .bind(new.api_key.as_str())
    .bind(new.scopes.names())
    .bind(digest(&login_token))
    .bind(LOGIN_TTL_SECS as f64)
    .bind(new.expires_in as f64)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Minted { id, login_token, expires_at })
}

/// Spends a login token: `None` when it is unknown, already used, past its few minutes, or its session has ended.
/// One statement, so two browsers racing with the same link cannot both get in.
pub async fn redeem(db: impl PgExecutor<'_>, login_token: &str) -> Result<Option<Entered>> {
    if !login_token.starts_with(LOGIN_PREFIX) || !well_formed(login_token) {
        return Ok(None);
    }
    let cookie_token = random_token("");
    let row: Option<Row> = sqlx::query_as(
        "UPDATE portal_sessions s SET redeemed_at = now(), session_hash = $2
          WHERE s.login_hash = $1 AND s.redeemed_at IS NULL AND s.login_expires_at > now()
            AND s.expires_at > now() AND s.revoked_at IS NULL
            AND EXISTS (SELECT 1 FROM api_keys k WHERE k.id = s.api_key_id AND k.revoked_at IS NULL)
         RETURNING s.id, s.tenant_id, s.environment, s.scopes, s.expires_at",
    )
    .bind(digest(login_token))
    .bind(digest(&cookie_token))
    .fetch_optional(db)
    .await?;
    row.map(|row| Ok(Entered { session: from_row(row)?, cookie_token })).transpose()
}

/// The live session a cookie stands for: `None` when unknown, expired, signed out or its key revoked.
pub async fn find(db: impl PgExecutor<'_>, cookie_token: &str) -> Result<Option<Session>> {
    if !well_formed(cookie_token) {
        return Ok(None);
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT s.id, s.tenant_id, s.environment, s.scopes, s.expires_at
           FROM portal_sessions s JOIN api_keys k ON k.id = s.api_key_id
          WHERE s.session_hash = $1 AND s.expires_at > now() AND s.revoked_at IS NULL AND k.revoked_at IS NULL",
    )
    .bind(digest(cookie_token))
    .fetch_optional(db)
    .await?;
    row.map(from_row).transpose()
}

/// Signs a session out; true when it was live.
pub async fn revoke(db: impl PgExecutor<'_>, owner: Owner, id: &PortalSessionId) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE portal_sessions SET revoked_at = now()
          WHERE id = $1 AND tenant_id = $2 AND environment = $3 AND revoked_at IS NULL",
    )
    .bind(id.as_str())
    .bind(owner.tenant.as_uuid())
    .bind(owner.environment.as_str())
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

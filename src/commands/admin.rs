//! Operator commands on tenants and keys: direct database access, across tenants.

use anyhow::{Context, bail};
use courier_core::{ApiKeyId, Environment, Scopes, TenantId};
use courier_store::{api_keys, tenants};
use sqlx::PgPool;

use super::terminal::shown;
use crate::cli::{EnvArg, KeysCommand, TenantsCommand};

fn parse_tenant(text: &str) -> anyhow::Result<TenantId> {
    text.parse().map_err(|_| anyhow::anyhow!("`{text}` is not a tenant id (a UUID)"))
}

pub async fn tenants(pool: &PgPool, cmd: TenantsCommand) -> anyhow::Result<()> {
    match cmd {
        TenantsCommand::Create { name, json } => {
            let name = name.trim();
            if name.is_empty() || name.len() > 200 {
                bail!("--name must be 1 to 200 characters");
            }
            let tenant = tenants::create(pool, name).await?;
            if json {
                println!("{}", serde_json::json!({"id": tenant.id, "name": tenant.name}));
            } else {
                println!("created tenant {} ({})", tenant.id, shown(&tenant.name));
            }
        }
        TenantsCommand::List { json } => {
            for t in tenants::list(pool).await? {
                if json {
                    println!("{}", serde_json::json!({"id": t.id, "name": t.name, "created_at": t.created_at}));
                } else {
                    println!("{}  {}  {}", t.id, t.created_at.format("%Y-%m-%d %H:%M"), shown(&t.name));
                }
            }
        }
    }
    Ok(())
}

pub async fn keys(pool: &PgPool, cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create(args) => {
            let tenant = parse_tenant(&args.tenant)?;
            let scopes = Scopes::parse_list(&args.scopes).context("--scopes")?;
            if scopes.iter().next().is_none() {
                bail!("--scopes needs at least one scope");
            }
            tenants::get(pool, tenant).await?.with_context(|| format!("no tenant {tenant}"))?;
            let environment = match args.env {
                EnvArg::Live => Environment::Live,
                EnvArg::Test => Environment::Test,
            };
            let created = api_keys::create(pool, tenant, environment, &scopes).await?;
            if args.json {
                println!("{}", serde_json::json!({"id": created.key.id, "key": created.plaintext}));
            } else {
                println!("created key {} ({environment}, {scopes})", created.key.id);
                println!("{}", created.plaintext);
                println!("This is the only time the key is shown.");
            }
        }
        KeysCommand::List { tenant, json } => {
            let tenant = parse_tenant(&tenant)?;
            for k in api_keys::list(pool, tenant).await? {
                let state = if k.revoked_at.is_some() { "revoked" } else { "active" };
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "id": k.id, "prefix": k.display_prefix, "environment": k.owner.environment,
                            "scopes": k.scopes.names(), "status": state, "created_at": k.created_at,
                            "last_used_at": k.last_used_at,
                        })
                    );
                } else {
                    println!("{}  {}…  {}  {}  {}", k.id, k.display_prefix, k.owner.environment, state, k.scopes);
                }
            }
        }
        KeysCommand::Revoke { id } => {
            let id = ApiKeyId::parse(&id).map_err(|e| anyhow::anyhow!("`{id}`: {e}"))?;
            if !api_keys::revoke(pool, &id).await? {
                bail!("no active key {id}");
            }
            println!("revoked {id}");
        }
    }
    Ok(())
}

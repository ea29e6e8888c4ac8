//! `courier dev`: the embedded default for development.

use std::path::Path;

use anyhow::Context;
use courier_core::MasterKey;
use courier_core::{Environment, Scope, Scopes, TenantId};
use courier_store::{api_keys, tenants};
use serde::{Deserialize, Serialize};

use crate::embedded_db::EmbeddedDb;
use crate::settings::Settings;

/// Where the development mode keeps its cluster, master key and development key (gitignored).
pub const DEV_HOME: &str = ".courier";

/// What the first `courier dev` created, so later runs reuse it.
#[derive(Serialize, Deserialize)]
struct DevIdentity {
    tenant_id: TenantId,
    api_key: String,
}

impl std::fmt::Debug for DevIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIdentity").field("tenant_id", &self.tenant_id).field("api_key", &"[redacted]").finish()
    }
}

fn master_key(home: &Path) -> anyhow::Result<String> {
    let path = home.join("secret_key");
    if let Ok(key) = std::fs::read_to_string(&path) {
        return Ok(key.trim().to_owned());
    }
    let key = MasterKey::generate_base64();
    crate::private_file::write(&path, key.as_bytes())?;
    Ok(key)
}

pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    let home = Path::new(DEV_HOME);
    let mut embedded = None;
    if settings.database.url.is_none() {
        let db = EmbeddedDb::locate(home)?;
        settings.database.url = Some(crate::settings::DatabaseUrl(db.start().await?));
        embedded = Some(db);
    }
    if settings.api.secret_key.is_none() {
        settings.api.secret_key = Some(secrecy::SecretString::from(master_key(home)?));
    }
    let db = super::database(&settings).await?;
    let pool = db.pool().clone();
    courier_store::MIGRATOR.run(&pool).await.context("migration failed")?;

    let identity_path = home.join("dev.json");
    let identity: DevIdentity = match std::fs::read(&identity_path).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
        Some(identity) => identity,
        None => {
            let tenant = tenants::create(&pool, "Development").await?;
            let created = api_keys::create(&pool, tenant.id, Environment::Test, &Scopes::new(Scope::ALL)).await?;
            let identity = DevIdentity { tenant_id: tenant.id, api_key: created.plaintext };
            crate::private_file::write(&identity_path, &serde_json::to_vec_pretty(&identity)?)?;
            identity
        }
    };
    let listen = settings.api.listen;
    println!("Courier development mode");
    println!("  database:  {}", settings.database.url.as_ref().map(|u| u.expose()).unwrap_or_default());
    println!("  tenant:    {}", identity.tenant_id);
    println!("  API key:   {}", identity.api_key);
    println!();
    println!("Try:");
    println!("  curl -s http://{listen}/api/v1/webhooks -H 'Authorization: Bearer {}'", identity.api_key);
    println!();
    // Development receivers run on this machine: let the guard and the URL rules allow loopback.
    if settings.delivery.allowed_targets.is_empty() {
        settings.delivery.allowed_targets = vec!["127.0.0.0/8".parse()?, "::1/128".parse()?];
    }
    settings.api.allow_http = true;
    let result = super::serve::serve(settings, db, crate::app::Role::All).await;
    if let Some(db) = embedded {
        eprintln!("courier: stopping the development database");
        db.stop()?;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_development_key() {
        let identity = DevIdentity { tenant_id: TenantId::generate(), api_key: "as_test_supersecret".to_owned() };
        assert!(!format!("{identity:?}").contains("supersecret"));
    }
}

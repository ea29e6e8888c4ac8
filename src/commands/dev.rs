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

/// Writes a file only its owner may read: the development master key and API key are secrets.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    // A file left by an older version keeps its mode on open: set it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents)?;
    Ok(())
}

fn master_key(home: &Path) -> anyhow::Result<String> {
    let path = home.join("secret_key");
    if let Ok(key) = std::fs::read_to_string(&path) {
        return Ok(key.trim().to_owned());
    }
    let key = MasterKey::generate_base64();
    write_private(&path, key.as_bytes())?;
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
        settings.api.secret_key = Some(courier_core::Redacted(master_key(home)?));
    }
    let pool = super::connect(&settings).await?;
    courier_store::MIGRATOR.run(&pool).await.context("migration failed")?;

    let identity_path = home.join("dev.json");
    let identity: DevIdentity = match std::fs::read(&identity_path).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
        Some(identity) => identity,
        None => {
            let tenant = tenants::create(&pool, "Development").await?;
            let created = api_keys::create(&pool, tenant.id, Environment::Test, &Scopes::new(Scope::ALL)).await?;
            let identity = DevIdentity { tenant_id: tenant.id, api_key: created.plaintext };
            write_private(&identity_path, &serde_json::to_vec_pretty(&identity)?)?;
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
    let result = super::serve::serve(settings, pool, crate::app::Role::All).await;
    if let Some(db) = embedded {
        eprintln!("courier: stopping the development database");
        db.stop()?;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn secrets_are_written_for_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("secret_key");
        // A file an older version left readable by everyone is tightened when rewritten.
        std::fs::write(&path, b"old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_private(&path, b"new").expect("written");
        let mode = std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        let fresh = dir.path().join("dev.json");
        write_private(&fresh, b"{}").expect("written");
        assert_eq!(std::fs::metadata(&fresh).expect("metadata").permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn debug_output_hides_the_development_key() {
        let identity = DevIdentity { tenant_id: TenantId::generate(), api_key: "as_test_supersecret".to_owned() };
        assert!(!format!("{identity:?}").contains("supersecret"));
    }
}

//! `courier serve` (API and workers) and `courier api` (API only).

use tokio_util::sync::CancellationToken;

use crate::app::{Application, Role};
use crate::settings::Settings;

pub async fn run(settings: Settings, role: Role) -> anyhow::Result<()> {
    let db = super::database(&settings).await?;
    serve(settings, db, role).await
}

/// Migrates, then serves until SIGTERM or ctrl-c.
pub async fn serve(settings: Settings, db: courier_store::cluster::Database, role: Role) -> anyhow::Result<()> {
    courier_store::MIGRATOR.run(db.pool()).await?;
    let app = Application::build(&settings, db, role).await?;
    let stop = CancellationToken::new();
    crate::shutdown::on_signals(stop.clone(), settings.lifecycle.shutdown_timeout);
    app.run(stop).await
}

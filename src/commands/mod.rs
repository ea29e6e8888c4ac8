//! What each CLI command does.

mod admin;
mod dev;
mod listen;
mod operate;
pub mod serve;
mod terminal;
pub mod worker;

use anyhow::Context;
use courier_store::cluster::{Database, Endpoints};
use sqlx::PgPool;

use crate::cli::{Cli, Command, DbCommand};
use crate::embedded_db::EmbeddedDb;
use crate::settings::Settings;
use crate::telemetry;

pub use dev::DEV_HOME;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref())?;
    let telemetry = telemetry::init(&settings.log)?;
    let result = command(cli.command, settings).await;
    // Flushing the last spans blocks on the exporter's thread; not on the runtime's.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    result
}

async fn command(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Migrate => {
            let pool = connect(&settings).await?;
            courier_store::MIGRATOR.run(&pool).await.context("migration failed")?;
            println!("migrations applied");
            Ok(())
        }
        Command::Dev => dev::run(settings).await,
        Command::Listen(args) => listen::run(args).await,
        Command::Worker => worker::run(settings).await,
        Command::Serve => serve::run(settings, crate::app::Role::All).await,
        Command::Api => serve::run(settings, crate::app::Role::Api).await,
        Command::Db(cmd) => {
            let db = EmbeddedDb::locate(std::path::Path::new(DEV_HOME))?;
            match cmd {
                DbCommand::Start => println!("{}", db.start().await?),
                DbCommand::Stop => db.stop()?,
                DbCommand::Url => println!("{}", db.url()?),
            }
            Ok(())
        }
        Command::Tenants(cmd) => admin::tenants(&connect(&settings).await?, cmd).await,
        Command::Keys(cmd) => admin::keys(&connect(&settings).await?, cmd).await,
        Command::Deliveries(cmd) => operate::deliveries(&connect(&settings).await?, cmd).await,
        Command::Replay(args) => operate::replay(&connect(&settings).await?, args).await,
        Command::Webhooks(cmd) => operate::webhooks(&connect(&settings).await?, cmd).await,
        Command::Ingest(crate::cli::IngestCommand::Rejects { limit, json }) => {
            operate::ingest_rejects(&connect(&settings).await?, limit, json).await
        }
        Command::Purge { tenant, before } => {
            operate::purge(&connect(&settings).await?, &tenant, before.as_deref()).await
        }
    }
}

/// A pool on `DATABASE_URL`, which every command but `dev` and `db` requires: the primary's, when it lists several
/// hosts. One-shot commands need no more; `serve`, `api` and `worker` keep the whole [`Database`].
pub async fn connect(settings: &Settings) -> anyhow::Result<PgPool> {
    Ok(database(settings).await?.pool().clone())
}

/// The primary among `DATABASE_URL`'s hosts, followed through failovers, and `COURIER_READ_DATABASE_URL`'s
/// replicas.
pub async fn database(settings: &Settings) -> anyhow::Result<Database> {
    let db = &settings.database;
    let primary = db.url.as_ref().map(|u| u.expose()).context("DATABASE_URL is not set (or run `courier dev`)")?;
    let endpoints = Endpoints {
        primary,
        replicas: db.read_url.as_ref().map(|u| u.expose()),
        max_lag: db.read_max_lag,
        max_connections: db.max_connections,
        acquire_timeout: std::time::Duration::from_secs(10),
    };
    Database::connect(&endpoints).await.context("cannot connect to DATABASE_URL")
}

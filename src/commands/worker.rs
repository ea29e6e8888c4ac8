//! `courier worker`: the delivery loop alone (scale out by running more of these on the same database).
//!
//! Not the bulk-replay or retention loops: every `serve` and `api` process runs those (`app.rs` says why), and
//! a worker added for delivery throughput should not also add replay throughput.

use anyhow::Context;
use courier_worker::Worker;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;

pub fn build(settings: &Settings, pool: PgPool) -> anyhow::Result<Worker> {
    Worker::new(pool, settings.master_key()?, settings.worker_config()).context("cannot start the delivery worker")
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    // Kept to the end: while it lives, its pool follows the primary through a failover.
    let db = super::database(&settings).await?;
    let worker = build(&settings, db.pool().clone())?;
    let stop = CancellationToken::new();
    crate::shutdown::on_signals(stop.clone(), settings.lifecycle.shutdown_timeout);
    tracing::info!(concurrency = settings.delivery.concurrency, "worker started");
    // A loop that fails (its database went away at the wrong moment) or panics is restarted with backoff, as under
    // `serve`; only a database unreachable at start ends the process, for its supervisor to retry.
    let components = courier_scheduler::supervise::Components::default();
    courier_scheduler::supervise::supervise("worker", components, stop.clone(), move || {
        worker.clone().run(stop.clone())
    })
    .await;
    drop(db);
    Ok(())
}

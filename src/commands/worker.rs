//! `courier worker`: the delivery loop alone (scale out by running more of these on the same database).

use std::time::Duration;

use anyhow::Context;
use courier_worker::{AutoDisable, Worker, WorkerConfig};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;

/// The worker's configuration from the settings tree.
pub fn config(settings: &Settings) -> WorkerConfig {
    let d = &settings.delivery;
    WorkerConfig {
        retry: d.retry,
        timeout: d.timeout,
        connect_timeout: d.connect_timeout,
        allowed_targets: d.allowed_targets.clone(),
        concurrency: d.concurrency,
        per_webhook: d.per_webhook_concurrency,
        per_tenant: d.per_tenant_concurrency,
        poll_interval: Duration::from_secs(1),
        // In-flight attempts get at most two thirds of the hard deadline; recording and releasing use the rest.
        shutdown_grace: (d.timeout + Duration::from_secs(1)).min(settings.lifecycle.shutdown_timeout * 2 / 3),
        lease: WorkerConfig::default_lease(d.timeout),
        auto_disable: (!d.disable_after.is_zero())
            .then_some(AutoDisable { after: d.disable_after, min_failures: d.disable_min_failures }),
    }
}

pub fn build(settings: &Settings, pool: PgPool) -> anyhow::Result<Worker> {
    Worker::new(pool, settings.master_key()?, config(settings)).context("cannot start the delivery worker")
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let pool = super::connect(&settings).await?;
    let worker = build(&settings, pool)?;
    let stop = CancellationToken::new();
    crate::shutdown::on_signals(stop.clone(), settings.lifecycle.shutdown_timeout);
    tracing::info!(concurrency = settings.delivery.concurrency, "worker started");
    // A loop that fails (its database went away at the wrong moment) or panics is restarted with backoff, as under
    // `serve`; only a database unreachable at start ends the process, for its supervisor to retry.
    let components = courier_api::supervise::Components::default();
    courier_api::supervise::supervise("worker", components, stop.clone(), move || worker.clone().run(stop.clone()))
        .await;
    Ok(())
}

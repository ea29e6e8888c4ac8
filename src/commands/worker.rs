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
        poll_interval: Duration::from_secs(1),
        shutdown_grace: d.timeout + Duration::from_secs(1),
        lease: WorkerConfig::default_lease(d.timeout),
        auto_disable: (!d.disable_after.is_zero())
            .then_some(AutoDisable { after: d.disable_after, min_failures: d.disable_min_failures }),
    }
}

pub fn build(settings: &Settings, pool: PgPool) -> anyhow::Result<Worker> {
    Worker::new(pool, settings.master_key()?, config(settings)).context("cannot start the delivery worker")
}

/// Cancels the token on SIGTERM or ctrl-c.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(err) => {
                    tracing::error!(error = %err, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    token.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down: no new claims, finishing in-flight deliveries");
        token.cancel();
    });
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let pool = super::connect(&settings).await?;
    let worker = build(&settings, pool)?;
    let stop = CancellationToken::new();
    cancel_on_signal(stop.clone());
    tracing::info!(concurrency = settings.delivery.concurrency, "worker started");
    worker.run(stop).await?;
    Ok(())
}

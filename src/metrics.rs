//! Prometheus text at `GET /metrics`: the process's counters and histograms plus queue gauges read at scrape time.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; later calls return the same handle.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0];
            let builder = PrometheusBuilder::new().set_buckets(&buckets).ok()?;
            match builder.install_recorder() {
                Ok(handle) => Some(handle),
                Err(err) => {
                    tracing::warn!(error = %err, "metrics recorder not installed; /metrics will be empty");
                    None
                }
            }
        })
        .clone()
}

pub async fn scrape(State(pool): State<PgPool>) -> impl IntoResponse {
    match courier_scheduler::stats::queue_stats(&pool).await {
        Ok(stats) => {
            metrics::gauge!("courier_queue_depth", "state" => "due").set(stats.due as f64);
            metrics::gauge!("courier_queue_depth", "state" => "scheduled").set(stats.scheduled as f64);
            metrics::gauge!("courier_queue_lag_seconds").set(stats.lag_seconds);
        }
        Err(err) => tracing::warn!(error = %err, "queue gauges not refreshed"),
    }
    let body = match install() {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

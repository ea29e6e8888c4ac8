//! Logs and traces, set up once per process.
//!
//! Logs: pretty on a terminal, JSON lines when `COURIER_LOG_FORMAT=json`, filtered by `RUST_LOG`.
//! Traces: when an OTLP endpoint is configured, every span of Courier's own crates (the API request and the delivery
//! attempt, with their attributes) is exported over OTLP/HTTP by a batching exporter on its own thread, so a slow
//! collector never slows a request or a delivery.
//!
//! `RUST_LOG` filters the whole subscriber, spans included, so it must leave Courier's crates at `info` for traces
//! to be exported (the default does). A per-layer log filter would spare the traces, but tracing-subscriber then
//! drops the event that follows one the `log` bridge queried (sqlx's notices do), and losing log lines is worse.

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::settings::{LogFormat, LogSettings};

/// Holds the trace exporter; [`Telemetry::shutdown`] (or dropping it) flushes the spans still queued.
#[must_use = "dropping the guard stops the trace export"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is queued and stops the exporter. Blocks for at most the exporter's timeout.
    pub fn shutdown(mut self) {
        self.flush_and_stop();
    }

    fn flush_and_stop(&mut self) {
        if let Some(provider) = self.traces.take()
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "the trace exporter did not shut down cleanly");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.flush_and_stop();
    }
}

pub fn init(settings: &LogSettings) -> anyhow::Result<Telemetry> {
    let traces = settings
        .otlp_traces_endpoint
        .as_deref()
        .map(|endpoint| tracer_provider(endpoint, &settings.service_name))
        .transpose()?;
    let export = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("courier"))
            // Courier's crates all start with `courier`: their spans, not those of the libraries below them.
            .with_filter(Targets::new().with_target("courier", Level::INFO))
    });
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match settings.format {
        LogFormat::Pretty => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    // A second initialisation (tests that share a process) is harmless, so its error is ignored.
    let _ = tracing_subscriber::registry().with(filter).with(export).with(fmt).try_init();
    Ok(Telemetry { traces })
}

fn tracer_provider(endpoint: &str, service_name: &str) -> anyhow::Result<SdkTracerProvider> {
    // The exporter's HTTP client uses rustls; the process-wide provider may already be installed (harmless).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .build()
        .with_context(|| format!("cannot set up the OTLP trace exporter for {endpoint}"))?;
    // `OTEL_RESOURCE_ATTRIBUTES` is read by the builder; the service name comes from the settings.
    let resource = Resource::builder().with_service_name(service_name.to_owned()).build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

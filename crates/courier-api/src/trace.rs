//! The request's trace context: continued from the caller's `traceparent`, and stored with the deliveries the request
//! creates so that their attempts link back to it. Without an OpenTelemetry exporter both are no-ops.

use axum::http::HeaderMap;
use courier_core::TraceParent;
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Makes `span` a child of the caller's trace when the request carries a valid W3C `traceparent`.
pub fn continue_caller_trace(span: &tracing::Span, headers: &HeaderMap) {
    let parent = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<TraceParent>().ok());
    if let Some(parent) = parent {
        // Fails only when no OpenTelemetry layer is installed, and then there is no trace to continue.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent.to_span_context()));
    }
}

/// The current request span's context, when it is being traced.
pub fn current() -> Option<TraceParent> {
    TraceParent::from_span_context(tracing::Span::current().context().span().span_context())
}

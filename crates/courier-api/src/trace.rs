//! The request's trace context: continued from the caller's `traceparent`, and stored with the deliveries the request
//! creates so that their attempts link back to it. Without an OpenTelemetry exporter both are no-ops.

use axum::http::HeaderMap;
use courier_core::TraceParent;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Makes `span` a child of the caller's trace when the request carries a valid W3C `traceparent`.
pub fn continue_caller_trace(span: &tracing::Span, headers: &HeaderMap) {
    let parent = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<TraceParent>().ok());
    if let Some(parent) = parent {
        // Fails only when no OpenTelemetry layer is installed, and then there is no trace to continue.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote(&parent)));
    }
}

/// The current request span's context, when it is being traced (not the empty context of an untraced process).
pub fn current() -> Option<TraceParent> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let cx = span.span_context();
    cx.is_valid()
        .then(|| TraceParent::new(cx.trace_id().to_bytes(), cx.span_id().to_bytes(), cx.trace_flags().to_u8()))?
}

/// A context received from the caller, as OpenTelemetry's (the core's `TraceParent` knows no telemetry library).
fn remote(parent: &TraceParent) -> SpanContext {
    let (trace, span) = (TraceId::from_bytes(parent.trace_id()), SpanId::from_bytes(parent.span_id()));
    SpanContext::new(trace, span, TraceFlags::new(parent.flags()), true, TraceState::default())
}

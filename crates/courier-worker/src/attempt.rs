//! One attempt of one claimed delivery: prepare → send → classify, inside the attempt's span.

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use std::time::Duration;

use chrono::{DateTime, Utc};
use courier_core::{AttemptResult, ErrorKind, outcome};
use courier_scheduler::{AttemptRecord, ClaimedDelivery, lease};
use tracing::{Instrument, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::Worker;
use crate::stages::{self, Sent};

/// The span of one attempt, linked to the request that created its delivery.
fn attempt_span(delivery: &ClaimedDelivery) -> Span {
    let span = tracing::info_span!(
        "delivery_attempt",
        otel.kind = "client",
        delivery.id = %delivery.id,
        event.id = %delivery.event.id,
        webhook.id = %delivery.webhook.id,
        attempt = delivery.attempt,
        http.status = Empty,
        error = Empty,
        outcome = Empty,
    );
    // Linked, not parented: the ingest request finished long ago, and one request fans out to many attempts.
    if let Some(ingest) = &delivery.trace_parent {
        let (trace, span_id) = (TraceId::from_bytes(ingest.trace_id()), SpanId::from_bytes(ingest.span_id()));
        let flags = TraceFlags::new(ingest.flags());
        span.add_link(SpanContext::new(trace, span_id, flags, true, TraceState::default()));
    }
    span
}

impl Worker {
    /// One attempt: prepare → send → classify. `None` when the webhook turned inactive (the delivery is cancelled).
    pub(crate) async fn attempt(&self, delivery: ClaimedDelivery) -> Option<AttemptRecord> {
        let span = attempt_span(&delivery);
        async move {
            if !delivery.webhook.active {
                self.cancel_inactive(&delivery).await;
                return None;
            }
            let started_at = Utc::now();
            let (sent, signature_timestamp) = self.sign_and_send(&delivery, started_at).await;
            let next = outcome::decide(&self.config.retry, delivery.attempt, delivery.max_attempts, sent.result);
            let span = Span::current();
            match sent.result {
                AttemptResult::Response { status, .. } => span.record("http.status", status),
                AttemptResult::Error(kind) => span.record("error", kind.as_str()),
            };
            span.record("outcome", next.as_str());
            crate::metrics::attempt_finished(sent.result, sent.duration, next);
            Some(AttemptRecord {
                delivery_id: delivery.id,
                webhook_id: delivery.webhook.id,
                attempt: delivery.attempt,
                started_at,
                duration: sent.duration,
                result: sent.result,
                error_message: sent.error_message,
                response_body: sent.response_body,
                signature_timestamp,
                next,
                ordered: delivery.ordered,
                handover: delivery.handover,
            })
        }
        .instrument(span)
        .await
    }

    /// The webhook was disabled or deleted after this delivery was queued: cancel it without an attempt.
    async fn cancel_inactive(&self, delivery: &ClaimedDelivery) {
        let claimed = [delivery.leased()];
        if let Err(err) = lease::cancel_claimed(&self.pool, &self.clock, &claimed).await {
            tracing::error!(error = %err, "cancelling a delivery of an inactive webhook failed");
        }
        Span::current().record("outcome", "cancelled");
        crate::metrics::cancelled();
    }

    /// Opens the webhook's secrets and custom headers, signs the envelope and sends it; returns what came back and
    /// the signature's timestamp.
    async fn sign_and_send(&self, delivery: &ClaimedDelivery, now: DateTime<Utc>) -> (Sent, i64) {
        let webhook = &delivery.webhook;
        let opened = webhook.secrets.open(&self.key, now).and_then(|secrets| {
            let headers = match &webhook.sealed_headers {
                Some(sealed) => self.key.open_headers(&webhook.id, sealed)?,
                None => Vec::new(),
            };
            let broker = webhook.sealed_broker.as_ref().map(|sealed| self.key.open_broker(&webhook.id, sealed));
            Ok((secrets, headers, broker.transpose()?))
        });
        match opened {
            Ok((secrets, headers, broker)) => {
                let mut prepared = stages::prepare(delivery, &secrets, now);
                prepared.headers = courier_core::Redacted(headers);
                let timestamp = prepared.timestamp;
                let sent = match &broker {
                    Some(broker) => stages::publish(&self.brokers, broker, delivery, prepared).await,
                    None => stages::send(&self.http, &self.policy, delivery, prepared).await,
                };
                (sent, timestamp)
            }
            Err(err) => {
                // Our own failure (a wrong master key): recorded as an attempt so it is visible, then retried.
                tracing::error!(error = %err, "cannot decrypt the webhook secret or headers");
                let sent = Sent {
                    result: AttemptResult::Error(ErrorKind::Other),
                    error_message: Some("the webhook secret, headers or destination could not be decrypted".to_owned()),
                    response_body: None,
                    duration: Duration::ZERO,
                };
                (sent, now.timestamp())
            }
        }
    }
}

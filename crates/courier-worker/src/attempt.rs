//! One attempt of one claimed delivery: prepare → send → classify, inside the attempt's span.

use std::time::Duration;

use chrono::Utc;
use courier_core::{AttemptResult, ErrorKind, outcome};
use courier_scheduler::{AttemptRecord, ClaimedDelivery, lease};
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::Worker;
use crate::stages;

impl Worker {
    /// One attempt: prepare → send → classify. `None` when the webhook turned inactive (the delivery is cancelled).
    pub(crate) async fn attempt(&self, delivery: ClaimedDelivery) -> Option<AttemptRecord> {
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
            span.add_link(ingest.to_span_context());
        }
        async move {
            if !delivery.webhook.active {
                let claimed = [(delivery.id.clone(), delivery.attempt)];
                if let Err(err) = lease::cancel_claimed(&self.pool, &claimed).await {
                    tracing::error!(error = %err, "cancelling a delivery of an inactive webhook failed");
                }
                tracing::Span::current().record("outcome", "cancelled");
                crate::metrics::cancelled();
                return None;
            }
            let started_at = Utc::now();
            let sent = match delivery.webhook.secrets.open(&self.key, started_at) {
                Ok(secrets) => {
                    let prepared = stages::prepare(&delivery, &secrets, started_at);
                    let timestamp = prepared.timestamp;
                    (stages::send(&self.http, &self.policy, &delivery, prepared).await, timestamp)
                }
                Err(err) => {
                    // Our own failure (a wrong master key): recorded as an attempt so it is visible, then retried.
                    tracing::error!(error = %err, "cannot decrypt the webhook secret");
                    let sent = stages::Sent {
                        result: AttemptResult::Error(ErrorKind::Other),
                        error_message: Some("the webhook secret could not be decrypted".to_owned()),
                        response_body: None,
                        duration: Duration::ZERO,
                    };
                    (sent, started_at.timestamp())
                }
            };
            let (sent, signature_timestamp) = sent;
            let next = outcome::decide(&self.config.retry, delivery.attempt, delivery.max_attempts, sent.result);
            let span = tracing::Span::current();
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
            })
        }
        .instrument(span)
        .await
    }
}

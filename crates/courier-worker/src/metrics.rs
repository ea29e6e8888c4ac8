//! The worker's metrics (exported by whatever recorder the process installed).

use std::time::Duration;

use courier_core::{AttemptResult, Next};

/// Counts one attempt and, when it ends the delivery, the delivery's outcome.
pub(crate) fn attempt_finished(result: AttemptResult, duration: Duration, next: Next) {
    let outcome = next.as_str();
    let finished = match next {
        Next::Succeeded => Some("succeeded"),
        Next::Retry { .. } => None,
        Next::Failed | Next::Gone => Some("failed"),
    };
    let status_class = match result {
        AttemptResult::Response { status, .. } => match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        },
        AttemptResult::Error(kind) => kind.as_str(),
    };
    metrics::counter!("courier_attempts_total", "outcome" => outcome, "status_class" => status_class).increment(1);
    metrics::histogram!("courier_attempt_duration_seconds").record(duration.as_secs_f64());
    if let Some(finished) = finished {
        metrics::counter!("courier_deliveries_finished_total", "outcome" => finished).increment(1);
    }
}

/// Counts what a call to the recorder did beyond the plain case.
pub(crate) fn recorded(recorded: &courier_scheduler::Recorded) {
    if recorded.split {
        metrics::counter!("courier_attempt_batches_split_total").increment(1);
    }
    if recorded.minimal > 0 {
        metrics::counter!("courier_attempts_recorded_degraded_total", "form" => "minimal").increment(recorded.minimal);
    }
    if recorded.dropped > 0 {
        metrics::counter!("courier_attempts_recorded_degraded_total", "form" => "dropped").increment(recorded.dropped);
    }
}

/// Counts a delivery in flight in this process for as long as it lives.
pub(crate) struct InFlightGuard;

impl InFlightGuard {
    pub(crate) fn new() -> Self {
        metrics::gauge!("courier_deliveries_in_flight").increment(1.0);
        Self
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        metrics::gauge!("courier_deliveries_in_flight").decrement(1.0);
    }
}

/// Counts a delivery cancelled at claim time (its webhook turned inactive).
pub(crate) fn cancelled() {
    metrics::counter!("courier_deliveries_finished_total", "outcome" => "cancelled").increment(1);
}

/// Counts an attempt that could not reach the recorder in time (its lease brings the delivery back).
pub(crate) fn record_dropped() {
    metrics::counter!("courier_attempt_records_dropped_total", "reason" => "queue_full").increment(1);
}

/// Counts a delivery deferred to its webhook's next rate-limit window.
pub(crate) fn rate_limited() {
    metrics::counter!("courier_deliveries_rate_limited_total").increment(1);
}

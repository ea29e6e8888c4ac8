//! What an attempt's result means for its delivery (DESIGN.md §3.5). A non-2xx answer is data, not an error.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::retry::RetryPolicy;

/// Why no HTTP response came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Timeout,
    /// Refused or reset connection.
    Connect,
    Dns,
    Tls,
    /// The target resolved only to addresses the SSRF guard forbids.
    BlockedTarget,
    /// The URL could not be requested at all.
    InvalidUrl,
    /// The response body could not be read.
    Body,
    /// A broker answered, refusing the message (no stream for the subject, a wrong password, a wrong key type).
    Refused,
    /// A broker took the message but did not acknowledge it within the attempt's time.
    NotConfirmed,
    /// A relay webhook's delivery found no `courier listen` connected (or it left before answering).
    NoListener,
    /// The worker holding the last allowed attempt stopped before recording it; only the sweep records this (on the
    /// delivery, as its last error), since nobody knows what the receiver answered.
    LeaseExpired,
    /// The delivery outlived its tenant's retention before it was delivered (a receiver that kept asking for more
    /// time, or an ordered chain behind one), so it ended unattempted: its event's history is due to go. Only the
    /// retention pass records this (on the delivery, as its last error).
    OutlivedRetention,
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::Timeout,
        ErrorKind::Connect,
        ErrorKind::Dns,
        ErrorKind::Tls,
        ErrorKind::BlockedTarget,
        ErrorKind::InvalidUrl,
        ErrorKind::Body,
        ErrorKind::Refused,
        ErrorKind::NotConfirmed,
        ErrorKind::NoListener,
        ErrorKind::LeaseExpired,
        ErrorKind::OutlivedRetention,
        ErrorKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Dns => "dns",
            ErrorKind::Tls => "tls",
            ErrorKind::BlockedTarget => "blocked_target",
            ErrorKind::InvalidUrl => "invalid_url",
            ErrorKind::Body => "body",
            ErrorKind::Refused => "refused",
            ErrorKind::NotConfirmed => "not_confirmed",
            ErrorKind::NoListener => "no_listener",
            ErrorKind::LeaseExpired => "lease_expired",
            ErrorKind::OutlivedRetention => "outlived_retention",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown attempt error kind `{0}`")]
pub struct UnknownErrorKind(pub String);

impl FromStr for ErrorKind {
    type Err = UnknownErrorKind;
    fn from_str(s: &str) -> Result<Self, UnknownErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownErrorKind(s.to_owned()))
    }
}

/// The result of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    Response {
        status: u16,
        /// The receiver's `Retry-After`, when it sent a usable one.
        retry_after: Option<Duration>,
    },
    Error(ErrorKind),
}

/// What happens to the delivery next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Succeeded,
    Retry {
        after: Duration,
    },
    /// Attempts exhausted.
    Failed,
    /// 410 Gone: fail now and disable the webhook.
    Gone,
}

impl Next {
    /// The name operators see in metrics and traces.
    pub fn as_str(&self) -> &'static str {
        match self {
            Next::Succeeded => "succeeded",
            Next::Retry { .. } => "retry",
            Next::Failed => "failed",
            Next::Gone => "gone",
        }
    }
}

/// Decides the next step after attempt number `attempt` (1-based) of `max_attempts`.
pub fn decide(policy: &RetryPolicy, attempt: u32, max_attempts: u32, result: AttemptResult) -> Next {
    let hint = match result {
        AttemptResult::Response { status, .. } if (200..300).contains(&status) => return Next::Succeeded,
        AttemptResult::Response { status: 410, .. } => return Next::Gone,
        // Retry-After is honoured only where HTTP gives it that meaning for a retry.
        AttemptResult::Response { status: 429 | 503, retry_after } => retry_after,
        _ => None,
    };
    if attempt >= max_attempts { Next::Failed } else { Next::Retry { after: policy.delay_with_hint(attempt, hint) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: RetryPolicy = RetryPolicy {
        initial: Duration::from_secs(30),
        multiplier: 4.0,
        cap: Duration::from_secs(86_400),
        jitter: 0.0,
    };

    fn response(status: u16) -> AttemptResult {
        AttemptResult::Response { status, retry_after: None }
    }

    #[test]
    fn follows_the_outcome_rules() {
        assert_eq!(decide(&P, 1, 5, response(200)), Next::Succeeded);
        assert_eq!(decide(&P, 5, 5, response(204)), Next::Succeeded);
        assert_eq!(decide(&P, 1, 5, response(410)), Next::Gone);
        assert_eq!(decide(&P, 1, 5, response(302)), Next::Retry { after: Duration::from_secs(30) });
        assert_eq!(decide(&P, 2, 5, response(500)), Next::Retry { after: Duration::from_secs(120) });
        assert_eq!(decide(&P, 5, 5, response(500)), Next::Failed);
        assert_eq!(decide(&P, 1, 1, AttemptResult::Error(ErrorKind::Timeout)), Next::Failed);
        assert_eq!(
            decide(&P, 1, 5, AttemptResult::Error(ErrorKind::BlockedTarget)),
            Next::Retry { after: Duration::from_secs(30) }
        );
    }

    #[test]
    fn retry_after_counts_only_on_429_and_503() {
        let hint = Some(Duration::from_secs(600));
        for status in [429, 503] {
            assert_eq!(
                decide(&P, 1, 5, AttemptResult::Response { status, retry_after: hint }),
                Next::Retry { after: Duration::from_secs(600) }
            );
        }
        assert_eq!(
            decide(&P, 1, 5, AttemptResult::Response { status: 500, retry_after: hint }),
            Next::Retry { after: Duration::from_secs(30) }
        );
    }

    #[test]
    fn error_kinds_round_trip() {
        for kind in ErrorKind::ALL {
            assert_eq!(kind.as_str().parse::<ErrorKind>(), Ok(kind));
        }
    }
}

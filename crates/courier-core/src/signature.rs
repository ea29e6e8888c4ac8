//! Request signatures: Courier's `X-Webhook-Signature` and the Standard Webhooks headers (DESIGN.md §3.4).
//!
//! Signing is pure: the caller passes the timestamp.
//! The verifiers are what a tenant's Rust backend would use to check a request Courier sent:
//!
//! ```
//! use courier_core::signature::{sign_header, verify_header, DEFAULT_TOLERANCE_SECS};
//! use courier_core::WebhookSecret;
//!
//! let secret = WebhookSecret::generate();
//! let body = br#"{"event":{}}"#;
//! let header = sign_header(&[&secret], 1_705_680_000, body);
//! assert!(verify_header(&secret, &header, body, 1_705_680_010, DEFAULT_TOLERANCE_SECS).is_ok());
//! ```

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::secret::WebhookSecret;

type HmacSha256 = Hmac<Sha256>;

/// How far a signature's timestamp may be from the verifier's clock, either way: five minutes, as in the guide.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the signature timestamp is outside the tolerance")]
    StaleTimestamp,
    #[error("no signature in the header matches")]
    NoMatch,
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length")
}

fn legacy_mac(secret: &WebhookSecret, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut m = mac(secret.expose().as_bytes());
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

fn standard_mac(secret: &WebhookSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut m = mac(secret.key_bytes());
    m.update(msg_id.as_bytes());
    m.update(b".");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// `X-Webhook-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`: HMAC-SHA256 over `"{t}.{body}"`, keyed by the whole `whsec_…` string.
///
/// One `v1` per secret, in the order given.
/// The guide's Python verifier reads only the *last* `v1` (it builds a dict), so callers put the newest secret last.
pub fn sign_header(secrets: &[&WebhookSecret], timestamp: i64, body: &[u8]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        header.push_str(",v1=");
        header.push_str(&hex::encode(legacy_mac(secret, timestamp, body).finalize().into_bytes()));
    }
    header
}

/// Standard Webhooks `webhook-signature`: space-separated `v1,<base64>` over `"{id}.{t}.{body}"`, keyed by the decoded secret.
pub fn sign_standard(secrets: &[&WebhookSecret], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| {
            format!("v1,{}", STANDARD.encode(standard_mac(secret, msg_id, timestamp, body).finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn check_timestamp(timestamp: i64, now: i64, tolerance_secs: u64) -> Result<(), VerifyError> {
    if timestamp.abs_diff(now) > tolerance_secs {
        return Err(VerifyError::StaleTimestamp);
    }
    Ok(())
}

/// Verifies an `X-Webhook-Signature` header against `body`: accepts when any `v1` matches, in constant time per comparison.
pub fn verify_header(
    secret: &WebhookSecret,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: u64,
) -> Result<(), VerifyError> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t.parse::<i64>().map_err(|_| VerifyError::Malformed)?),
            Some(("v1", sig)) => candidates.push(sig),
            Some(_) => {} // Unknown schemes are ignored so new ones can be added.
            None => return Err(VerifyError::Malformed),
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::Malformed)?;
    if candidates.is_empty() {
        return Err(VerifyError::Malformed);
    }
    check_timestamp(timestamp, now, tolerance_secs)?;
    let matched = candidates.iter().any(|sig| {
        hex::decode(sig).is_ok_and(|bytes| legacy_mac(secret, timestamp, body).verify_slice(&bytes).is_ok())
    });
    if matched { Ok(()) } else { Err(VerifyError::NoMatch) }
}

/// Verifies Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
pub fn verify_standard(
    secret: &WebhookSecret,
    msg_id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: u64,
) -> Result<(), VerifyError> {
    let timestamp: i64 = timestamp.trim().parse().map_err(|_| VerifyError::Malformed)?;
    check_timestamp(timestamp, now, tolerance_secs)?;
    let matched = signature.split_whitespace().any(|entry| match entry.split_once(',') {
        Some(("v1", sig)) => STANDARD
            .decode(sig)
            .is_ok_and(|bytes| standard_mac(secret, msg_id, timestamp, body).verify_slice(&bytes).is_ok()),
        _ => false,
    });
    if matched { Ok(()) } else { Err(VerifyError::NoMatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_specification_vector() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("spec secret");
        let body = br#"{"test": 2432232314}"#;
        let sig = sign_standard(&[&secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(
            verify_standard(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", &sig, body, 1_614_265_330, 300),
            Ok(())
        );
    }

    #[test]
    fn header_verifies_and_rejects_tampering() {
        let secret = WebhookSecret::generate();
        let body = br#"{"a":1}"#;
        let header = sign_header(&[&secret], 1000, body);
        assert!(header.starts_with("t=1000,v1="));
        assert_eq!(verify_header(&secret, &header, body, 1000, 300), Ok(()));
        assert_eq!(verify_header(&secret, &header, br#"{"a":2}"#, 1000, 300), Err(VerifyError::NoMatch));
        assert_eq!(verify_header(&WebhookSecret::generate(), &header, body, 1000, 300), Err(VerifyError::NoMatch));
        assert_eq!(verify_header(&secret, &header, body, 1301, 300), Err(VerifyError::StaleTimestamp));
        assert_eq!(verify_header(&secret, &header, body, 699, 300), Err(VerifyError::StaleTimestamp));
        assert_eq!(verify_header(&secret, "v1=abc", body, 1000, 300), Err(VerifyError::Malformed));
        assert_eq!(verify_header(&secret, "t=x,v1=abc", body, 1000, 300), Err(VerifyError::Malformed));
    }

    #[test]
    fn rotation_signs_with_every_secret() {
        let old = WebhookSecret::generate();
        let new = WebhookSecret::generate();
        let body = b"{}";
        let header = sign_header(&[&old, &new], 5, body);
        assert_eq!(header.matches("v1=").count(), 2);
        assert_eq!(verify_header(&old, &header, body, 5, 300), Ok(()));
        assert_eq!(verify_header(&new, &header, body, 5, 300), Ok(()));
        let standard = sign_standard(&[&old, &new], "evt_1", 5, body);
        assert_eq!(verify_standard(&old, "evt_1", "5", &standard, body, 5, 300), Ok(()));
        assert_eq!(verify_standard(&new, "evt_1", "5", &standard, body, 5, 300), Ok(()));
        assert_eq!(verify_standard(&new, "evt_2", "5", &standard, body, 5, 300), Err(VerifyError::NoMatch));
    }
}

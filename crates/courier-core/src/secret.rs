//! Webhook signing secrets.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const PREFIX: &str = "whsec_";

/// `whsec_` followed by the base64 of 32 random bytes.
///
/// The whole string keys the `X-Webhook-Signature` scheme (as the integration guide's verifier does);
/// the decoded bytes key the Standard Webhooks scheme.
/// `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    text: String,
    key: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a webhook secret starts with `whsec_`")]
    MissingPrefix,
    #[error("a webhook secret's body must be base64 of 24 to 64 bytes")]
    BadBody,
}

impl WebhookSecret {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self { text: format!("{PREFIX}{}", STANDARD.encode(bytes)), key: bytes.to_vec() }
    }

    pub fn parse(s: &str) -> Result<Self, SecretError> {
        let body = s.strip_prefix(PREFIX).ok_or(SecretError::MissingPrefix)?;
        let key = STANDARD.decode(body).map_err(|_| SecretError::BadBody)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::BadBody);
        }
        Ok(Self { text: s.to_owned(), key })
    }

    /// The full `whsec_…` text, as shown to the tenant once.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The decoded key bytes (the Standard Webhooks HMAC key).
    pub fn key_bytes(&self) -> &[u8] {
        &self.key
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(whsec_…redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_has_the_documented_shape_and_hides_in_debug() {
        let secret = WebhookSecret::generate();
        assert!(secret.expose().starts_with("whsec_"));
        assert_eq!(secret.key_bytes().len(), 32);
        assert_eq!(WebhookSecret::parse(secret.expose()), Ok(secret.clone()));
        let debug = format!("{secret:?}");
        assert!(!debug.contains(&secret.expose()[6..]), "{debug}");
    }

    #[test]
    fn malformed_secrets_are_rejected() {
        assert_eq!(WebhookSecret::parse("sk_abc"), Err(SecretError::MissingPrefix));
        assert_eq!(WebhookSecret::parse("whsec_!!!"), Err(SecretError::BadBody));
        assert_eq!(WebhookSecret::parse("whsec_YWJj"), Err(SecretError::BadBody));
    }
}

/// A value that must never reach a log: `Debug` prints `[redacted]`; serialising (an API response that hands a
/// secret over once) still writes the value.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Redacted<T>(pub T);

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T: serde::Serialize> serde::Serialize for Redacted<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

#[cfg(test)]
mod redacted_tests {
    use super::Redacted;

    #[test]
    fn debug_hides_the_value_and_serialising_keeps_it() {
        let secret = Redacted("whsec_abc".to_owned());
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(serde_json::to_string(&secret).expect("json"), "\"whsec_abc\"");
    }
}

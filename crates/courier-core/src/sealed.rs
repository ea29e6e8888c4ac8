//! Webhook signing secrets at rest: AES-256-GCM under the configured master key.
//!
//! This is pure crypto (no IO), so it lives in core: the store seals a secret when it writes one, and the worker
//! opens the ciphertexts its claim returned without reaching the store.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};

use crate::{CustomHeaders, WebhookId, WebhookSecret};

const NONCE_LEN: usize = 12;

/// The 32-byte master key (`COURIER_SECRET_KEY`, base64). `Debug` never prints it.
#[derive(Clone)]
pub struct MasterKey(Aes256Gcm);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the master key must be base64 of exactly 32 bytes")]
pub struct BadMasterKey;

/// A stored secret that does not open: the wrong master key, or a ciphertext moved to another row.
#[derive(Debug, thiserror::Error)]
pub enum DecryptError {
    #[error("the ciphertext is shorter than its nonce")]
    Truncated,
    #[error("the ciphertext does not open under this key for this webhook")]
    Open(#[source] aes_gcm::Error),
    #[error("the opened secret is not UTF-8")]
    NotText(#[source] std::string::FromUtf8Error),
    #[error("the opened secret is not a webhook secret")]
    NotASecret(#[source] crate::secret::SecretError),
    #[error("the opened headers are not the list they were sealed as")]
    NotHeaders(#[source] serde_json::Error),
    #[error("the opened destination is not the broker it was sealed as")]
    NotABroker(#[source] serde_json::Error),
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(Aes256Gcm::new(&Key::<Aes256Gcm>::from(*bytes)))
    }

    pub fn from_base64(text: &str) -> Result<Self, BadMasterKey> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| BadMasterKey)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| BadMasterKey)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// A fresh random key, base64-encoded, for the development mode.
    pub fn generate_base64() -> String {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        STANDARD.encode(bytes)
    }

    /// Nonce followed by ciphertext and tag. `aad` binds the ciphertext to its row so it cannot be moved to another.
    pub fn encrypt(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let sealed = self
            .0
            .encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad })
            // Encryption only fails for plaintexts beyond 64 GiB.
            .expect("AES-GCM encrypts a short secret");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn decrypt(&self, aad: &[u8], stored: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let Some((nonce, sealed)) = stored.split_first_chunk::<NONCE_LEN>() else {
            return Err(DecryptError::Truncated);
        };
        self.0.decrypt(&Nonce::from(*nonce), Payload { msg: sealed, aad }).map_err(DecryptError::Open)
    }

    /// Seals a webhook's secret, bound to the webhook's id.
    pub fn seal(&self, webhook: &WebhookId, secret: &WebhookSecret) -> Vec<u8> {
        self.encrypt(webhook.as_str().as_bytes(), secret.expose().as_bytes())
    }

    /// Seals a webhook's custom headers (names and values), bound to the webhook and to being its headers, so
    /// neither another webhook's headers nor its secret's ciphertext can be moved here.
    pub fn seal_headers(&self, webhook: &WebhookId, headers: &CustomHeaders) -> Vec<u8> {
        let json = serde_json::to_vec(headers.expose()).expect("pairs of strings serialise");
        self.encrypt(format!("{webhook}/headers").as_bytes(), &json)
    }

    /// Opens what [`MasterKey::seal_headers`] sealed for the same webhook.
    pub fn open_headers(&self, webhook: &WebhookId, sealed: &[u8]) -> Result<Vec<(String, String)>, DecryptError> {
        let json = self.decrypt(format!("{webhook}/headers").as_bytes(), sealed)?;
        serde_json::from_slice(&json).map_err(DecryptError::NotHeaders)
    }

    /// Seals a webhook's broker destination (its URL and credentials may hold passwords), bound to the webhook and
    /// to being its destination.
    pub fn seal_broker(&self, webhook: &WebhookId, broker: &crate::Broker) -> Vec<u8> {
        let json = serde_json::to_vec(broker).expect("a broker serialises");
        self.encrypt(format!("{webhook}/destination").as_bytes(), &json)
    }

    /// Opens what [`MasterKey::seal_broker`] sealed for the same webhook.
    pub fn open_broker(&self, webhook: &WebhookId, sealed: &[u8]) -> Result<crate::Broker, DecryptError> {
        let json = self.decrypt(format!("{webhook}/destination").as_bytes(), sealed)?;
        serde_json::from_slice(&json).map_err(DecryptError::NotABroker)
    }

    /// Opens what [`MasterKey::seal`] sealed for the same webhook.
    pub fn open(&self, webhook: &WebhookId, sealed: &[u8]) -> Result<WebhookSecret, DecryptError> {
        let text =
            String::from_utf8(self.decrypt(webhook.as_str().as_bytes(), sealed)?).map_err(DecryptError::NotText)?;
        WebhookSecret::parse(&text).map_err(DecryptError::NotASecret)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(redacted)")
    }
}

/// A webhook's sealed secrets as a claim reads them: the current one, and the previous one with the end of its
/// rotation grace while it has one.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecrets {
    pub webhook: WebhookId,
    pub current: Vec<u8>,
    pub previous: Option<(Vec<u8>, DateTime<Utc>)>,
}

impl fmt::Debug for SealedSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedSecrets").field("webhook", &self.webhook).finish_non_exhaustive()
    }
}

impl SealedSecrets {
    /// The secrets that sign a request at `now`: the previous one while its grace lasts, then the current one.
    /// The newest comes last because the integration guide's verifier reads only the last `v1`.
    pub fn open(&self, key: &MasterKey, now: DateTime<Utc>) -> Result<Vec<WebhookSecret>, DecryptError> {
        let mut secrets = Vec::with_capacity(2);
        if let Some((sealed, expires_at)) = &self.previous
            && *expires_at > now
        {
            secrets.push(key.open(&self.webhook, sealed)?);
        }
        secrets.push(key.open(&self.webhook, &self.current)?);
        Ok(secrets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_binds_to_its_row() {
        let key = MasterKey::from_base64(&MasterKey::generate_base64()).expect("valid");
        let sealed = key.encrypt(b"wh_1", b"whsec_secret");
        assert_eq!(key.decrypt(b"wh_1", &sealed).expect("decrypts"), b"whsec_secret");
        assert!(matches!(key.decrypt(b"wh_2", &sealed), Err(DecryptError::Open(_))));
        let other = MasterKey::from_base64(&MasterKey::generate_base64()).expect("valid");
        assert!(other.decrypt(b"wh_1", &sealed).is_err());
        assert!(matches!(key.decrypt(b"wh_1", b"short"), Err(DecryptError::Truncated)));
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
    }

    #[test]
    fn headers_round_trip_and_do_not_open_as_anything_else() {
        let key = MasterKey::from_bytes(&[9; 32]);
        let webhook = WebhookId::generate();
        let headers = CustomHeaders::new(vec![("X-Api-Key".to_owned(), "k-1".to_owned())]).expect("valid");
        let sealed = key.seal_headers(&webhook, &headers);
        assert_eq!(key.open_headers(&webhook, &sealed).expect("opens"), headers.expose());
        assert!(key.open_headers(&WebhookId::generate(), &sealed).is_err(), "bound to its webhook");
        let secret = key.seal(&webhook, &WebhookSecret::generate());
        assert!(key.open_headers(&webhook, &secret).is_err(), "a secret's ciphertext is not headers");
    }

    #[test]
    fn the_previous_secret_signs_only_during_its_grace_and_comes_first() {
        let key = MasterKey::from_bytes(&[7; 32]);
        let webhook = WebhookId::generate();
        let (old, new) = (WebhookSecret::generate(), WebhookSecret::generate());
        let now = Utc::now();
        let sealed = SealedSecrets {
            webhook: webhook.clone(),
            current: key.seal(&webhook, &new),
            previous: Some((key.seal(&webhook, &old), now + chrono::Duration::seconds(10))),
        };
        assert_eq!(sealed.open(&key, now).expect("opens"), vec![old, new.clone()]);
        assert_eq!(sealed.open(&key, now + chrono::Duration::seconds(11)).expect("opens"), vec![new]);
        let moved = SealedSecrets { webhook: WebhookId::generate(), ..sealed };
        assert!(moved.open(&key, now).is_err(), "a ciphertext copied to another webhook does not open");
    }
}

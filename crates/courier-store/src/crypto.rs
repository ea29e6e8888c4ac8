//! Webhook secrets at rest: AES-256-GCM under the configured master key.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::{Error, Result};

const NONCE_LEN: usize = 12;

/// The 32-byte master key (`COURIER_SECRET_KEY`, base64). `Debug` never prints it.
#[derive(Clone)]
pub struct MasterKey(Aes256Gcm);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the master key must be base64 of exactly 32 bytes")]
pub struct BadMasterKey;

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

    pub fn decrypt(&self, aad: &[u8], stored: &[u8]) -> Result<Vec<u8>> {
        if stored.len() < NONCE_LEN {
            return Err(Error::Decrypt);
        }
        let (nonce, sealed) = stored.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Error::Decrypt)?;
        self.0.decrypt(&Nonce::from(nonce), Payload { msg: sealed, aad }).map_err(|_| Error::Decrypt)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(redacted)")
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
        assert!(key.decrypt(b"wh_2", &sealed).is_err());
        let other = MasterKey::from_base64(&MasterKey::generate_base64()).expect("valid");
        assert!(other.decrypt(b"wh_1", &sealed).is_err());
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
    }
}

//! The client side of SCRAM (RFC 5802, with SHA-256 and SHA-512 as RFC 7677 and Kafka use them): what a Kafka
//! destination's SASL exchange sends, and the check that the server knew the password too. Pure: the transport
//! is the caller's.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};

/// The most PBKDF2 iterations a server may ask for (Kafka's own ceiling): a hostile broker cannot make a worker
/// spend seconds of CPU per connection.
pub const MAX_ITERATIONS: u32 = 16_384;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("the server's SCRAM message is malformed: {0}")]
    Malformed(&'static str),
    #[error("the server's nonce does not extend ours")]
    Nonce,
    #[error("the server asked for {0} iterations (at most {MAX_ITERATIONS})")]
    Iterations(u64),
    #[error("the server refused: {0}")]
    Refused(String),
    #[error("the server's signature does not match: it does not know the password")]
    ServerSignature,
}

/// One exchange: [`Scram::client_first`], then [`Scram::client_final`] on the server's first message, then
/// [`Scram::verify`] on its final one.
pub struct Scram {
    hash: Hash,
    password: String,
    client_first_bare: String,
    nonce: String,
    /// Set by `client_final`: the signature the server must answer with.
    server_signature: Option<Vec<u8>>,
}

impl std::fmt::Debug for Scram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scram").field("hash", &self.hash).finish_non_exhaustive()
    }
}

impl Scram {
    pub fn new(hash: Hash, username: &str, password: &str) -> Self {
        let mut bytes = [0u8; 18];
        rand::fill(&mut bytes);
        Self::with_nonce(hash, username, password, &STANDARD.encode(bytes))
    }

    fn with_nonce(hash: Hash, username: &str, password: &str, nonce: &str) -> Self {
        let name = username.replace('=', "=3D").replace(',', "=2C");
        let client_first_bare = format!("n={name},r={nonce}");
        let (password, nonce) = (password.to_owned(), nonce.to_owned());
        Self { hash, password, client_first_bare, nonce, server_signature: None }
    }

    /// The first message: no channel binding, no authorisation identity.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// The final message, proving the password, for the server's first message.
    pub fn client_final(&mut self, server_first: &str) -> Result<String, ScramError> {
        let attribute = |name: &str| {
            server_first.split(',').find_map(|part| part.strip_prefix(name).and_then(|p| p.strip_prefix('=')))
        };
        if let Some(error) = attribute("e") {
            return Err(ScramError::Refused(error.chars().take(200).collect()));
        }
        let nonce = attribute("r").ok_or(ScramError::Malformed("no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Nonce);
        }
        let salt = STANDARD.decode(attribute("s").ok_or(ScramError::Malformed("no salt"))?);
        let salt = salt.map_err(|_| ScramError::Malformed("a salt that is not base64"))?;
        let iterations: u64 =
            attribute("i").and_then(|i| i.parse().ok()).ok_or(ScramError::Malformed("no iteration count"))?;
        if iterations == 0 || iterations > u64::from(MAX_ITERATIONS) {
            return Err(ScramError::Iterations(iterations));
        }
        let salted = self.salted_password(&salt, iterations as u32);
        let client_key = self.hmac(&salted, b"Client Key");
        let stored_key = self.digest(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = self.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(k, s)| k ^ s).collect();
        let server_key = self.hmac(&salted, b"Server Key");
        self.server_signature = Some(self.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)))
    }

    /// Checks the server's final message: it proves the server holds the password's keys.
    pub fn verify(&self, server_final: &str) -> Result<(), ScramError> {
        if let Some(error) = server_final.strip_prefix("e=") {
            return Err(ScramError::Refused(error.chars().take(200).collect()));
        }
        let given = server_final.split(',').find_map(|part| part.strip_prefix("v="));
        let given = given.and_then(|v| STANDARD.decode(v).ok()).ok_or(ScramError::Malformed("no verifier"))?;
        match &self.server_signature {
            Some(expected) if *expected == given => Ok(()),
            _ => Err(ScramError::ServerSignature),
        }
    }

    /// PBKDF2 with this hash's HMAC, one block (as long as the hash).
    fn salted_password(&self, salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut block = salt.to_vec();
        block.extend_from_slice(&1u32.to_be_bytes());
        let mut u = self.hmac(self.password.as_bytes(), &block);
        let mut result = u.clone();
        for _ in 1..iterations {
            u = self.hmac(self.password.as_bytes(), &u);
            result.iter_mut().zip(&u).for_each(|(r, x)| *r ^= x);
        }
        result
    }

    fn hmac(&self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self.hash {
            Hash::Sha256 => {
                let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            Hash::Sha512 => {
                let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    fn digest(&self, data: &[u8]) -> Vec<u8> {
        match self.hash {
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example exchange, byte for byte.
    #[test]
    fn matches_rfc_7677() {
        let mut scram = Scram::with_nonce(Hash::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(scram.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        assert_eq!(
            scram.client_final(server_first).expect("a valid first message"),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(scram.verify("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="), Ok(()));
        assert_eq!(scram.verify("v=AAAA"), Err(ScramError::ServerSignature));
    }

    #[test]
    fn refuses_a_hostile_server() {
        let mut scram = Scram::with_nonce(Hash::Sha512, "a=b,c", "pw", "abc");
        assert_eq!(scram.client_first(), "n,,n=a=3Db=2Cc,r=abc");
        assert_eq!(scram.client_final("r=xyz1,s=AAAA,i=4096"), Err(ScramError::Nonce));
        assert_eq!(scram.client_final("r=abc,s=AAAA,i=4096"), Err(ScramError::Nonce));
        assert_eq!(scram.client_final("r=abcd,s=AAAA,i=99999999"), Err(ScramError::Iterations(99_999_999)));
        assert!(matches!(scram.client_final("e=invalid-proof"), Err(ScramError::Refused(_))));
        assert!(scram.client_final("r=abcd,s=AAAA,i=4096").is_ok());
        assert_eq!(scram.verify("v=AAAA"), Err(ScramError::ServerSignature));
    }
}

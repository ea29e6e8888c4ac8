//! Prefixed, time-sortable identifiers.
//!
//! Generated ids are `<prefix>` followed by a 26-character ULID-style Crockford base32 rendering of a UUIDv7,
//! so their text sorts in creation order and cursor pages can use them directly. (A delivery id made in SQL
//! carries its event's time instead, migration 0023: deliveries sort by their event.)

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const BODY_LEN: usize = 26;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("expected an id starting with `{prefix}`")]
    WrongPrefix { prefix: &'static str },
    #[error("malformed `{prefix}` id")]
    Malformed { prefix: &'static str },
}

fn encode(value: u128) -> String {
    let mut out = [0u8; BODY_LEN];
    let mut v = value;
    for slot in out.iter_mut().rev() {
        *slot = CROCKFORD[(v & 31) as usize];
        v >>= 5;
    }
    out.iter().map(|&b| b as char).collect()
}

fn decode(body: &str) -> Option<u128> {
    if body.len() != BODY_LEN {
        return None;
    }
    let mut v: u128 = 0;
    for (i, c) in body.bytes().enumerate() {
        let digit = CROCKFORD.iter().position(|&d| d == c.to_ascii_uppercase())? as u128;
        // The first character carries only the top 3 bits of 128.
        if i == 0 && digit > 7 {
            return None;
        }
        v = (v << 5) | digit;
    }
    Some(v)
}

macro_rules! generated_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id, sorting after every id made before it.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, encode(Uuid::now_v7().as_u128())))
            }

            pub fn parse(s: &str) -> Result<Self, IdError> {
                let body = s.strip_prefix($prefix).ok_or(IdError::WrongPrefix { prefix: $prefix })?;
                let value = decode(body).ok_or(IdError::Malformed { prefix: $prefix })?;
                // Normalise case so lookups never miss on a lower-cased copy.
                Ok(Self(format!("{}{}", $prefix, encode(value))))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The smallest id of unix millisecond `ms` or later: ids sort by their time (creation, or a
            /// delivery's event), so a time range is an id range (an index range scan) too. Times before 1970 clamp to the first id.
            pub fn first_at(ms: i64) -> Self {
                let ms = u128::try_from(ms.max(0)).unwrap_or(0) & ((1 << 48) - 1);
                Self(format!("{}{}", $prefix, encode(ms << 80)))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

generated_id!(
    /// A webhook endpoint: `wh_…`.
    WebhookId,
    "wh_"
);
generated_id!(
    /// One delivery of one event to one webhook: `dlv_…`.
    DeliveryId,
    "dlv_"
);
generated_id!(
    /// An API key's public identifier (not the secret key): `key_…`.
    ApiKeyId,
    "key_"
);
generated_id!(
    /// A bulk replay job: `rpl_…`.
    ReplayId,
    "rpl_"
);

generated_id!(
    /// A tenant portal session (its public identifier, never its tokens): `ps_…`.
    PortalSessionId,
    "ps_"
);

/// An event id: `evt_…`.
///
/// Courier generates ULID-bodied ids, but the emitter may bring its own (`evt_abc123` in the guide),
/// so any body of 1–100 characters from `[A-Za-z0-9_-]` is accepted.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(String);

impl EventId {
    pub const PREFIX: &'static str = "evt_";
    pub const MAX_BODY_LEN: usize = 100;

    pub fn generate() -> Self {
        Self(format!("evt_{}", encode(Uuid::now_v7().as_u128())))
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        let body = s.strip_prefix(Self::PREFIX).ok_or(IdError::WrongPrefix { prefix: Self::PREFIX })?;
        let well_formed = !body.is_empty()
            && body.len() <= Self::MAX_BODY_LEN
            && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if well_formed { Ok(Self(s.to_owned())) } else { Err(IdError::Malformed { prefix: Self::PREFIX }) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({})", self.0)
    }
}

impl FromStr for EventId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A tenant: a plain UUID, as the guide's `"tenant_id": "tenant-uuid"` shows.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(Uuid);

impl TenantId {
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl FromStr for TenantId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Uuid::parse_str(s).map(Self).map_err(|_| IdError::Malformed { prefix: "tenant" })
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_at_bounds_the_ids_of_a_millisecond() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
        let before = DeliveryId::first_at(now - 1);
        let id = DeliveryId::generate();
        let after = DeliveryId::first_at(now + 60_000);
        assert!(before <= id && id < after, "{before} {id} {after}");
        assert_eq!(DeliveryId::first_at(-5), DeliveryId::first_at(0));
        assert!(DeliveryId::parse(DeliveryId::first_at(now).as_str()).is_ok());
    }

    #[test]
    fn generated_ids_round_trip_and_sort_by_creation() {
        let a = DeliveryId::generate();
        let b = DeliveryId::generate();
        assert!(a.as_str().starts_with("dlv_"));
        assert_eq!(a.as_str().len(), 4 + BODY_LEN);
        assert!(a < b, "{a} should sort before {b}");
        assert_eq!(DeliveryId::parse(a.as_str()), Ok(a.clone()));
        assert_eq!(DeliveryId::parse(&a.as_str().to_lowercase()), Ok(a));
    }

    #[test]
    fn malformed_ids_are_rejected() {
        assert_eq!(WebhookId::parse("dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV"), Err(IdError::WrongPrefix { prefix: "wh_" }));
        assert_eq!(WebhookId::parse("wh_short"), Err(IdError::Malformed { prefix: "wh_" }));
        // 'U' is not in Crockford's alphabet.
        assert!(WebhookId::parse("wh_01ARZ3NDEKTSV4RRFFQ69G5FAU").is_err());
        // The first character may carry at most 3 bits.
        assert!(WebhookId::parse("wh_81ARZ3NDEKTSV4RRFFQ69G5FAV").is_err());
        assert!(WebhookId::parse("wh_01ARZ3NDEKTSV4RRFFQ69G5FAV").is_ok());
    }

    #[test]
    fn event_ids_accept_emitter_chosen_bodies() {
        assert!(EventId::parse("evt_abc123").is_ok());
        assert!(EventId::parse("evt_a-b_C").is_ok());
        assert!(EventId::parse("evt_").is_err());
        assert!(EventId::parse("evt_has space").is_err());
        assert!(EventId::parse("abc").is_err());
        assert!(EventId::parse(&format!("evt_{}", "x".repeat(101))).is_err());
        let generated = EventId::generate();
        assert_eq!(EventId::parse(generated.as_str()), Ok(generated));
    }
}

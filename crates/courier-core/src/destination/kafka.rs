//! A Kafka topic as a destination: the bootstrap brokers, the topic, what keys a record, and optional SASL and TLS.
//! Sealed with the rest of the destination (the SASL password is a credential) and shown with its credentials
//! masked. Host names and ports are checked here; whether an address may be dialled is the SSRF guard's, at creation
//! for literals and at connect time for every address, the brokers the cluster advertises included.

use serde::{Deserialize, Serialize};

/// The most bootstrap brokers a destination lists.
pub const MAX_BOOTSTRAP: usize = 16;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaTopic {
    /// `host:port` of one or more brokers of the cluster; the client learns the rest from their metadata.
    pub brokers: Vec<String>,
    pub topic: String,
    #[serde(default)]
    pub key: KafkaKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
    /// Every connection, to the bootstrap brokers and to the ones they advertise, over TLS.
    #[serde(default)]
    pub tls: bool,
}

/// What a record's key is: a call's events share a partition, so a consumer sees them in order (`call_id`, the
/// default), or each event spreads by its id, or no key at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaKey {
    #[default]
    CallId,
    EventId,
    None,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The name the SASL handshake sends.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl KafkaTopic {
    /// The host and port of each bootstrap broker (checked by [`KafkaTopic::invalid_field`]).
    pub fn bootstrap(&self) -> impl Iterator<Item = (&str, u16)> {
        self.brokers.iter().filter_map(|broker| split_host_port(broker))
    }

    /// What the URL column shows for it: `kafka://host:port,…/topic` (no credentials).
    pub fn shown_url(&self) -> String {
        let scheme = if self.tls { "kafka+tls" } else { "kafka" };
        format!("{scheme}://{}/{}", self.brokers.join(","), self.topic)
    }

    /// The field a problem is in and why; `None` when every field is valid.
    pub fn invalid_field(&self) -> Option<(&'static str, String)> {
        if self.brokers.is_empty() || self.brokers.len() > MAX_BOOTSTRAP {
            return Some(("brokers", format!("must list 1 to {MAX_BOOTSTRAP} brokers")));
        }
        if let Some(bad) = self.brokers.iter().find(|b| split_host_port(b).is_none()) {
            let shown: String = bad.chars().take(64).filter(|c| !c.is_control()).collect();
            return Some(("brokers", format!("`{shown}` is not host:port (a name or an address, and a port)")));
        }
        if !valid_topic(&self.topic) {
            return Some(("topic", "must be 1 to 249 letters, digits, `.`, `_` or `-` (not `.` or `..`)".to_owned()));
        }
        if let Some(sasl) = &self.sasl {
            let bad = |v: &str| v.is_empty() || v.len() > 1024 || v.chars().any(char::is_control);
            if bad(&sasl.username) || bad(&sasl.password) {
                return Some((
                    "sasl",
                    "username and password must be 1 to 1024 bytes without control characters".into(),
                ));
            }
        }
        None
    }
}

/// `host:port`, `[v6]:port`: the host (brackets removed) and a port other than 0.
pub fn split_host_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    let name_char = |c: char| c.is_ascii_alphanumeric() || "-._:".contains(c);
    (!host.is_empty() && host.len() <= 253 && host.chars().all(name_char)).then_some((host, port))
}

/// A topic name Kafka accepts.
fn valid_topic(topic: &str) -> bool {
    (1..=249).contains(&topic.len())
        && topic != "."
        && topic != ".."
        && topic.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(brokers: &[&str], topic: &str) -> KafkaTopic {
        let brokers = brokers.iter().map(|b| (*b).to_owned()).collect();
        KafkaTopic { brokers, topic: topic.into(), key: KafkaKey::default(), sasl: None, tls: false }
    }

    #[test]
    fn brokers_are_host_and_port_and_topics_are_kafka_names() {
        assert_eq!(topic(&["kafka-1:9092", "[::1]:9093", "10.0.0.1:1"], "agent-studio.calls").invalid_field(), None);
        for bad in ["kafka-1", "kafka-1:0", "kafka-1:99999", ":9092", "a b:9092", "::1:9092", "u@h:9092", "h/x:1"] {
            assert_eq!(topic(&[bad], "calls").invalid_field().map(|(f, _)| f), Some("brokers"), "{bad}");
        }
        assert_eq!(topic(&[], "calls").invalid_field().map(|(f, _)| f), Some("brokers"));
        for bad in ["", ".", "..", "a/b", "calls!", &"x".repeat(250)] {
            assert_eq!(topic(&["h:1"], bad).invalid_field().map(|(f, _)| f), Some("topic"), "{bad}");
        }
        assert_eq!(split_host_port("[::1]:9093"), Some(("::1", 9093)));
    }

    #[test]
    fn defaults_to_keying_by_call_and_names_sasl_mechanisms_as_kafka_does() {
        let json =
            r#"{"brokers":["h:9092"],"topic":"t","sasl":{"mechanism":"SCRAM-SHA-512","username":"u","password":"p"}}"#;
        let parsed: KafkaTopic = serde_json::from_str(json).expect("parses");
        assert_eq!(parsed.key, KafkaKey::CallId);
        assert_eq!(parsed.sasl.as_ref().map(|s| s.mechanism), Some(SaslMechanism::ScramSha512));
        assert!(!parsed.tls);
        assert!(serde_json::from_str::<KafkaKey>(r#""event_id""#).is_ok());
        assert!(serde_json::from_str::<SaslMechanism>(r#""GSSAPI""#).is_err());
        assert_eq!(parsed.shown_url(), "kafka://h:9092/t");
    }
}

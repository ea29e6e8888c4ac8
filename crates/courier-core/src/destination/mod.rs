//! Where a webhook delivers when it is not an HTTP URL: a broker the tenant's own services read (DESIGN.md §3.2).
//!
//! A webhook whose destination is HTTP has only its `url`; one that publishes to a broker also has a [`Broker`],
//! stored sealed (its URL and credentials may hold passwords) and shown masked. The broker URL's syntax and the
//! SSRF rules are checked where a URL parser is (the API at creation, the worker at connect time): the core stays
//! free of IO and of URL parsing.

pub mod kafka;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use kafka::KafkaTopic;

/// A destination that is not an HTTP URL.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Broker {
    /// `XADD` to a Redis stream: the envelope and the signature headers as the entry's fields.
    Redis(RedisStream),
    /// A publish to a NATS JetStream subject, acknowledged by the stream that stores it.
    Nats(NatsSubject),
    /// A persistent publish to a RabbitMQ exchange (AMQP 0-9-1), confirmed by the broker.
    Rabbitmq(RabbitExchange),
    /// A record produced to a Kafka topic (idempotent, `acks=all`), keyed by call unless told otherwise.
    Kafka(KafkaTopic),
    /// Handed to a `courier listen` connected over a WebSocket, which POSTs it to a developer's local port and
    /// answers with what that port answered.
    Relay,
}

/// What a relay webhook's `url` column holds: it has no URL of its own.
pub const RELAY_URL: &str = "relay://courier-listen";

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisStream {
    /// `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS.
    pub url: String,
    pub stream: String,
    /// Trims the stream to about this many entries on every add (`MAXLEN ~`); unbounded when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxlen: Option<u64>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSubject {
    /// `nats://[user:password@ | token@]host[:port]`, or `tls://` for TLS.
    pub url: String,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<NatsCredentials>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitExchange {
    /// `amqp://[user:password@]host[:port][/vhost]`, or `amqps://` for TLS (port 5671 by default).
    pub url: String,
    /// The exchange (`""` is the default exchange, which routes by queue name).
    pub exchange: String,
    /// The routing key; `{type}` stands for the event type (`agent-studio.{type}` → `agent-studio.call.completed`).
    pub routing_key: String,
}

impl RabbitExchange {
    /// The routing key of an event of type `event_type`.
    pub fn routing_key_for(&self, event_type: &str) -> String {
        self.routing_key.replace("{type}", event_type)
    }
}

/// A user and password, or a token, for a NATS server (instead of putting them in the URL).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsCredentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The URL schemes of a broker type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schemes {
    pub plain: &'static str,
    pub tls: &'static str,
}

/// What stands in for a credential wherever a destination is shown.
pub const MASK: &str = "********";

impl Broker {
    /// The name a destination's `type` carries.
    pub fn kind(&self) -> &'static str {
        match self {
            Broker::Redis(_) => "redis",
            Broker::Nats(_) => "nats",
            Broker::Rabbitmq(_) => "rabbitmq",
            Broker::Kafka(_) => "kafka",
            Broker::Relay => "relay",
        }
    }

    /// The schemes its URL may have: in plain text, and over TLS (`tls://` is NATS's own name for it).
    pub fn schemes(&self) -> Schemes {
        match self {
            Broker::Redis(_) => Schemes { plain: "redis", tls: "rediss" },
            Broker::Nats(_) => Schemes { plain: "nats", tls: "tls" },
            Broker::Rabbitmq(_) => Schemes { plain: "amqp", tls: "amqps" },
            Broker::Kafka(_) => Schemes { plain: "kafka", tls: "kafka+tls" },
            Broker::Relay => Schemes { plain: "relay", tls: "relay" },
        }
    }

    /// The broker's URL; a relay has none, and a Kafka topic lists its brokers instead.
    pub fn url(&self) -> Option<&str> {
        match self {
            Broker::Redis(r) => Some(&r.url),
            Broker::Nats(n) => Some(&n.url),
            Broker::Rabbitmq(r) => Some(&r.url),
            Broker::Kafka(_) | Broker::Relay => None,
        }
    }

    /// Every field as given, credentials masked: `masked_url` is the URL with its credentials masked (the caller
    /// parses URLs), and a NATS `credentials` or Kafka `sasl` object keeps its keys with masked values (but the SASL
    /// mechanism).
    pub fn shown(&self, masked_url: &str) -> serde_json::Value {
        let mut shown = serde_json::to_value(self).expect("a broker serialises");
        if self.url().is_some() {
            shown["url"] = serde_json::Value::String(masked_url.to_owned());
        }
        if let Some(credentials) = shown.get_mut("credentials").and_then(serde_json::Value::as_object_mut) {
            for value in credentials.values_mut() {
                *value = serde_json::Value::String(MASK.to_owned());
            }
        }
        if let Some(sasl) = shown.get_mut("sasl").and_then(serde_json::Value::as_object_mut) {
            for (_, value) in sasl.iter_mut().filter(|(key, _)| key.as_str() != "mechanism") {
                *value = serde_json::Value::String(MASK.to_owned());
            }
        }
        shown
    }

    /// What the field names a problem in (`destination.<field>`) and why; `None` when the non-URL fields are valid.
    pub fn invalid_field(&self) -> Option<(&'static str, String)> {
        match self {
            Broker::Redis(r) => {
                if r.stream.is_empty() || r.stream.len() > 256 || r.stream.contains('\0') {
                    return Some(("stream", "must be 1 to 256 bytes, without NUL".to_owned()));
                }
                if r.maxlen.is_some_and(|n| !(1..=1_000_000_000).contains(&n)) {
                    return Some(("maxlen", "must be between 1 and 1000000000".to_owned()));
                }
                None
            }
            Broker::Nats(n) => {
                if !valid_subject(&n.subject) {
                    let why = "must be dot-separated tokens of printable characters without wildcards (`*`, `>`), \
                               at most 255 bytes";
                    return Some(("subject", why.to_owned()));
                }
                let fields = n.credentials.iter().flat_map(|c| [&c.username, &c.password, &c.token]).flatten();
                if fields.clone().any(|v| v.is_empty() || v.len() > 1024 || v.chars().any(char::is_control)) {
                    return Some(("credentials", "values must be 1 to 1024 bytes without control characters".into()));
                }
                None
            }
            Broker::Rabbitmq(r) => {
                let name = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
                if r.exchange.len() > 127 || !name(&r.exchange) {
                    return Some(("exchange", "must be at most 127 letters, digits, `-`, `_`, `.` or `:`".to_owned()));
                }
                // The longest event type is well under 55 bytes, so a key this long stays within AMQP's 255.
                if r.routing_key.len() > 200 || r.routing_key.chars().any(|c| c.is_control()) {
                    return Some(("routing_key", "must be at most 200 bytes without control characters".to_owned()));
                }
                None
            }
            Broker::Kafka(k) => k.invalid_field(),
            Broker::Relay => None,
        }
    }
}

/// Custom header names a broker message cannot carry: the Redis entry's own fields, and NATS's `Nats-*` headers,
/// which steer JetStream (`Nats-Expected-Stream` fails every publish, `Nats-Rollup` purges the stream). The API
/// refuses them beside a broker destination; the worker leaves out any that got there by another path.
pub fn header_reserved_for_brokers(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "body" || name == "delivery_id" || name.starts_with("nats-")
}

/// A subject one may publish to: tokens of visible characters, no wildcards, no empty token.
fn valid_subject(subject: &str) -> bool {
    subject.len() <= 255
        && subject
            .split('.')
            .all(|token| !token.is_empty() && token.chars().all(|c| c.is_ascii_graphic() && c != '*' && c != '>'))
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL and credentials may hold passwords.
        write!(f, "Broker({}, redacted)", self.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nats(subject: &str) -> Broker {
        Broker::Nats(NatsSubject { url: "nats://u:p@h:4222".into(), subject: subject.into(), credentials: None })
    }

    #[test]
    fn parses_by_type_refuses_unknown_fields_and_never_prints_credentials() {
        let json = r#"{"type":"redis","url":"redis://:pw@h:6379/0","stream":"calls","maxlen":1000}"#;
        let broker: Broker = serde_json::from_str(json).expect("parses");
        assert_eq!(broker.kind(), "redis");
        assert!(!format!("{broker:?}").contains("pw"));
        assert_eq!(serde_json::to_string(&broker).expect("serialises"), json);
        assert!(serde_json::from_str::<Broker>(r#"{"type":"redis","url":"u","stream":"s","x":1}"#).is_err());
        assert!(serde_json::from_str::<Broker>(r#"{"type":"kafka","url":"u"}"#).is_err());
        let relay: Broker = serde_json::from_str(r#"{"type":"relay"}"#).expect("a relay has no fields");
        assert_eq!((relay.kind(), relay.url()), ("relay", None));
        assert_eq!(relay.shown("ignored"), serde_json::json!({"type": "relay"}));
    }

    #[test]
    fn shown_masks_the_url_and_every_credential() {
        let broker = Broker::Nats(NatsSubject {
            url: "nats://tok@h:4222".into(),
            subject: "calls".into(),
            credentials: Some(NatsCredentials { username: Some("u".into()), password: Some("p".into()), token: None }),
        });
        let shown = broker.shown("nats://********@h:4222");
        assert_eq!(shown["url"], "nats://********@h:4222");
        assert_eq!(shown["credentials"], serde_json::json!({"username": MASK, "password": MASK}));
        assert_eq!(shown["type"], "nats");
        let kafka: Broker = serde_json::from_str(
            r#"{"type":"kafka","brokers":["h:9092"],"topic":"t","sasl":{"mechanism":"PLAIN","username":"u","password":"p"}}"#,
        )
        .expect("parses");
        let shown = kafka.shown("kafka://h:9092/t");
        assert_eq!(shown["sasl"], serde_json::json!({"mechanism": "PLAIN", "username": MASK, "password": MASK}));
        assert_eq!((shown["key"].as_str(), shown["tls"].as_bool()), (Some("call_id"), Some(false)));
        assert!(shown.get("url").is_none());
    }

    #[test]
    fn broker_fields_and_jetstream_headers_are_reserved() {
        for name in ["body", "Delivery_Id", "Nats-Rollup", "nats-expected-stream"] {
            assert!(header_reserved_for_brokers(name), "{name}");
        }
        assert!(!header_reserved_for_brokers("X-Api-Key"));
    }

    #[test]
    fn subjects_and_streams_are_checked() {
        assert_eq!(nats("agent-studio.calls").invalid_field(), None);
        for bad in ["", "a..b", "calls.*", "calls.>", "a b", ".a"] {
            assert_eq!(nats(bad).invalid_field().map(|(f, _)| f), Some("subject"), "{bad:?}");
        }
        let redis = |stream: &str, maxlen| {
            Broker::Redis(RedisStream { url: "redis://h".into(), stream: stream.into(), maxlen })
        };
        assert_eq!(redis("calls", Some(100)).invalid_field(), None);
        assert_eq!(redis("", None).invalid_field().map(|(f, _)| f), Some("stream"));
        assert_eq!(redis("calls", Some(0)).invalid_field().map(|(f, _)| f), Some("maxlen"));
    }
}

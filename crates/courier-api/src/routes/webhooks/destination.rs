//! Where a webhook delivers, as a request names it: `url` (HTTP, the short form) or a `destination` object (HTTP,
//! a Redis stream, a NATS subject, a RabbitMQ exchange, a Kafka topic, a relay), checked into what the store keeps.

use courier_core::CustomHeaders;
use courier_store::webhooks;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::target::validate_url;

/// Where a webhook delivers. Broker URLs may carry credentials (`redis://:password@host:6379/0`,
/// `nats://user:password@host:4222`, `nats://token@host:4222`): they are stored encrypted and shown masked.
/// The body is the same envelope an HTTP delivery carries, and the signature headers travel with it (NATS message
/// headers, Redis stream fields), so the guide's `verify_signature` checks it unchanged.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum DestinationInput {
    /// POST to a URL (what `url` alone means).
    Http {
        #[schema(example = "https://your-backend.com/webhooks/agent-studio", max_length = 2048)]
        url: String,
    },
    /// `XADD` to a Redis stream; the entry's fields are `body` (the envelope) and the signature headers.
    Redis {
        #[schema(example = "redis://:password@redis.example.com:6379/0", max_length = 2048)]
        url: String,
        #[schema(example = "agent-studio.calls", max_length = 256)]
        stream: String,
        /// Trim the stream to about this many entries (`MAXLEN ~`).
        #[schema(minimum = 1, maximum = 1000000000)]
        #[serde(default, deserialize_with = "crate::extract::whole::optional")]
        maxlen: Option<u64>,
    },
    /// Publish to a NATS JetStream subject, acknowledged by the stream; `Nats-Msg-Id` is the delivery id, so
    /// JetStream drops a retried publish it already stored.
    Nats {
        #[schema(example = "nats://nats.example.com:4222", max_length = 2048)]
        url: String,
        #[schema(example = "agent-studio.calls", max_length = 255)]
        subject: String,
        credentials: Option<NatsCredentialsInput>,
    },
    /// A persistent publish to a RabbitMQ exchange, confirmed by the broker (publisher confirms); `message_id` is
    /// the delivery id, `type` the event type, and the signature headers are message headers. A message no queue
    /// takes (mandatory) or an exchange that does not exist is refused.
    Rabbitmq {
        #[schema(example = "amqp://courier:password@rabbitmq.example.com:5672/%2F", max_length = 2048)]
        url: String,
        #[schema(example = "amq.topic", max_length = 127)]
        exchange: String,
        /// `{type}` stands for the event type.
        #[schema(example = "agent-studio.{type}", max_length = 200)]
        routing_key: String,
    },
    /// A record produced to a Kafka topic by an idempotent producer, acknowledged by every in-sync replica
    /// (`acks=all`). Its value is the envelope, its headers the signature headers and the webhook's custom headers,
    /// its key the event's `call_id` (so a call's events share a partition and arrive in order), its `event_id`, or
    /// none. Every broker the cluster advertises passes the same address rules as a URL.
    Kafka {
        #[schema(example = json!(["kafka-1.example.com:9092", "kafka-2.example.com:9092"]), max_items = 16)]
        brokers: Vec<String>,
        #[schema(example = "agent-studio.calls", max_length = 249)]
        topic: String,
        key: Option<KafkaKeyInput>,
        sasl: Option<KafkaSaslInput>,
        /// TLS to every broker (required for live-mode keys unless `COURIER_ALLOW_HTTP`).
        tls: Option<bool>,
    },
    /// Delivered to a `courier listen` connected over a WebSocket (`GET /api/v1/webhooks/{id}/listen`), which
    /// POSTs it to a local port and answers with that port's status and body. Test-mode keys only, unless
    /// `COURIER_RELAY_LIVE`.
    Relay {},
}

impl std::fmt::Debug for DestinationInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Broker URLs and credentials may hold passwords.
        f.write_str("DestinationInput(redacted)")
    }
}

/// A NATS user and password, or a token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsCredentialsInput {
    #[schema(max_length = 1024)]
    pub username: Option<String>,
    #[schema(max_length = 1024)]
    pub password: Option<String>,
    #[schema(max_length = 1024)]
    pub token: Option<String>,
}

/// What keys a Kafka record.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum KafkaKeyInput {
    CallId,
    EventId,
    None,
}

/// SASL credentials for a Kafka cluster (stored encrypted, shown masked).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSaslInput {
    pub mechanism: SaslMechanismInput,
    #[schema(max_length = 1024)]
    pub username: String,
    #[schema(max_length = 1024)]
    pub password: String,
}

#[derive(Deserialize, ToSchema, Clone, Copy)]
pub enum SaslMechanismInput {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

/// The core's Kafka destination from its request form.
fn kafka_topic(
    brokers: Vec<String>,
    topic: String,
    key: Option<KafkaKeyInput>,
    sasl: Option<KafkaSaslInput>,
    tls: Option<bool>,
) -> courier_core::destination::KafkaTopic {
    use courier_core::destination::kafka::{KafkaKey, KafkaSasl, SaslMechanism};
    let key = match key {
        None | Some(KafkaKeyInput::CallId) => KafkaKey::CallId,
        Some(KafkaKeyInput::EventId) => KafkaKey::EventId,
        Some(KafkaKeyInput::None) => KafkaKey::None,
    };
    let sasl = sasl.map(|s| KafkaSasl {
        mechanism: match s.mechanism {
            SaslMechanismInput::Plain => SaslMechanism::Plain,
            SaslMechanismInput::ScramSha256 => SaslMechanism::ScramSha256,
            SaslMechanismInput::ScramSha512 => SaslMechanism::ScramSha512,
        },
        username: s.username,
        password: s.password,
    });
    courier_core::destination::KafkaTopic { brokers, topic, key, sasl, tls: tls.unwrap_or(false) }
}

/// A 422 naming the first custom header a broker message cannot carry, when `broker` is one.
pub(super) fn check_broker_headers(
    broker: Option<&webhooks::BrokerDestination>,
    headers: &CustomHeaders,
) -> Result<(), ApiError> {
    if broker.is_none() {
        return Ok(());
    }
    match headers.names().into_iter().find(|name| courier_core::destination::header_reserved_for_brokers(name)) {
        Some(name) => Err(ApiError::invalid(
            format!("headers.{name}"),
            "is reserved on a broker destination (`body`, `delivery_id`, `Nats-*`)",
        )),
        None => Ok(()),
    }
}

/// Where a webhook delivers, as stored: the URL column (for a broker, its URL with credentials masked) and the
/// broker, when it is one.
pub(super) type Target = (String, Option<webhooks::BrokerDestination>);

/// The target `url` or `destination` names; a 422 when both or (`required`) neither are given.
pub(super) fn target_of(
    url: Option<String>,
    destination: Option<DestinationInput>,
    environment: courier_core::Environment,
    rules: &crate::state::WebhookRules,
    required: bool,
) -> Result<Option<Target>, ApiError> {
    use courier_core::destination::{Broker, NatsCredentials, NatsSubject, RedisStream};
    let broker = match (url, destination) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("destination", "give `url` or `destination`, not both")),
        (None, None) if required => return Err(ApiError::invalid("url", "give `url` or `destination`")),
        (None, None) => return Ok(None),
        (Some(url), None) | (None, Some(DestinationInput::Http { url })) => {
            let field = "url";
            return Ok(Some((validate_url(field, &url, environment, rules)?, None)));
        }
        (None, Some(DestinationInput::Redis { url, stream, maxlen })) => {
            Broker::Redis(RedisStream { url, stream, maxlen })
        }
        (None, Some(DestinationInput::Relay {})) => Broker::Relay,
        (None, Some(DestinationInput::Kafka { brokers, topic, key, sasl, tls })) => {
            Broker::Kafka(kafka_topic(brokers, topic, key, sasl, tls))
        }
        (None, Some(DestinationInput::Rabbitmq { url, exchange, routing_key })) => {
            Broker::Rabbitmq(courier_core::destination::RabbitExchange { url, exchange, routing_key })
        }
        (None, Some(DestinationInput::Nats { url, subject, credentials })) => Broker::Nats(NatsSubject {
            url,
            subject,
            credentials: credentials.map(|c| NatsCredentials {
                username: c.username,
                password: c.password,
                token: c.token,
            }),
        }),
    };
    let masked_url = crate::target::validate_broker(&broker, environment, rules)?;
    let shown = broker.shown(&masked_url);
    Ok(Some((masked_url, Some(webhooks::BrokerDestination { broker, shown }))))
}

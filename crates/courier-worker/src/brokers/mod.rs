//! Publishing to a broker instead of POSTing: a Redis stream (`XADD`), a NATS JetStream subject (a publish the
//! stream acknowledges), a RabbitMQ exchange (a confirmed publish) or a Kafka topic (an idempotent produce with
//! `acks=all`); or handing the delivery to a `courier listen` connected to this process (a relay). The
//! body is the same signed envelope, and the signature headers travel with it.
//!
//! Each attempt is one publish on a connection taken from a small per-destination pool, inside the attempt's
//! time, like an HTTP attempt: a broker that hangs holds one of its webhook's slots until the timeout, never
//! another webhook's. Every address is vetted by the same SSRF guard as a URL, at connect time.
//!
//! What an attempt records: a broker's acknowledgement is recorded as a 200 whose body is the broker's answer
//! (JetStream's `{"stream", "seq"}`, Redis's entry id, Kafka's `{"topic", "partition", "offset"}`), so logs, the portal and the retry rules read it as they
//! read an HTTP answer; a failure is `dns`, `blocked_target`, `connect`, `timeout` (no connection or no answer
//! in time), `refused` (the broker said no: a wrong password, no stream for the subject) or `not_confirmed` (the
//! message went out and no acknowledgement came back in time).

pub mod amqp;
mod connect;
pub mod kafka;
pub mod nats;
mod pool;
pub mod redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use courier_core::destination::kafka::KafkaKey;
use courier_core::destination::{KafkaTopic, NatsSubject, RabbitExchange, RedisStream};
use courier_core::{AttemptResult, Broker, ErrorKind, ResponseBody};

pub use connect::Failure;
use pool::Pool;

use crate::ssrf::TargetPolicy;
use crate::stages::Sent;

/// A message as every broker publishes it.
#[derive(Debug)]
pub struct Message<'a> {
    pub body: &'a [u8],
    /// The signature headers and the webhook's custom headers, as an HTTP delivery sends them.
    pub headers: Vec<(String, String)>,
    pub delivery: &'a courier_scheduler::ClaimedDelivery,
}

/// What came back from a destination: a broker's acknowledgement (a 200 with its answer), or what a relay's
/// local target answered.
struct Answer {
    status: u16,
    body: Vec<u8>,
    truncated: bool,
}

impl Answer {
    fn acknowledged(body: Vec<u8>) -> Self {
        Self { status: 200, body, truncated: false }
    }
}

/// The broker connections of one worker, pooled per destination (`Debug` shows no destination: pool keys hold
/// credentials).
#[derive(Clone)]
pub struct Brokers {
    redis: Arc<Pool<redis::Connection>>,
    nats: Arc<Pool<nats::Connection>>,
    rabbitmq: Arc<Pool<amqp::Connection>>,
    kafka: Arc<Pool<kafka::Producer>>,
    /// The `courier listen` sessions connected to this process's API (none unless it runs one).
    relays: courier_scheduler::relay::Relays,
    policy: Arc<TargetPolicy>,
    connect_timeout: Duration,
    /// An attempt's whole time: connect, publish and acknowledgement.
    timeout: Duration,
}

impl std::fmt::Debug for Brokers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Brokers").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Brokers {
    pub fn new(policy: Arc<TargetPolicy>, connect_timeout: Duration, timeout: Duration) -> Self {
        let relays = courier_scheduler::relay::Relays::default();
        let (redis, nats, rabbitmq) = (Arc::default(), Arc::default(), Arc::default());
        // A webhook's default concurrency (64) of producers kept warm for up to 64 destinations: 4,096 sockets at most.
        let kafka = Arc::new(Pool::with_limits(64, 64));
        Self { redis, nats, rabbitmq, kafka, relays, policy, connect_timeout, timeout }
    }

    /// The same, handing relay deliveries to the listeners connected to this process's API.
    pub fn with_relays(self, relays: courier_scheduler::relay::Relays) -> Self {
        Self { relays, ..self }
    }

    /// One attempt: publish `message` to `broker` within the attempt's time.
    pub async fn publish(&self, broker: &Broker, message: &Message<'_>) -> Sent {
        let started = Instant::now();
        // Set once the message was written: a timeout after it is `not_confirmed`, before it `timeout`.
        let written = AtomicBool::new(false);
        let published = match broker {
            Broker::Redis(stream) => tokio::time::timeout(self.timeout, self.to_redis(stream, message, &written)).await,
            Broker::Nats(subject) => tokio::time::timeout(self.timeout, self.to_nats(subject, message, &written)).await,
            Broker::Rabbitmq(exchange) => {
                tokio::time::timeout(self.timeout, self.to_rabbitmq(exchange, message, &written)).await
            }
            Broker::Kafka(topic) => tokio::time::timeout(self.timeout, self.to_kafka(topic, message, &written)).await,
            Broker::Relay => tokio::time::timeout(self.timeout, self.to_relay(message)).await,
        };
        let outcome = published.unwrap_or_else(|_| {
            let kind = broker.kind();
            Err(match broker {
                Broker::Relay => Failure::new(ErrorKind::Timeout, "the listener's local target did not answer in time"),
                // Kafka's own name for a record not acknowledged within the delivery timeout.
                Broker::Kafka(_) => Failure::new(ErrorKind::Timeout, "kafka did not acknowledge the record in time"),
                _ if written.load(Ordering::Relaxed) => {
                    Failure::new(ErrorKind::NotConfirmed, format!("{kind} did not acknowledge the message in time"))
                }
                _ => Failure::new(ErrorKind::Timeout, format!("{kind} did not answer in time")),
            })
        });
        match outcome {
            Ok(answer) => Sent {
                result: AttemptResult::Response { status: answer.status, retry_after: None },
                error_message: None,
                response_body: (!answer.body.is_empty()).then(|| ResponseBody::capture(answer.body, answer.truncated)),
                duration: started.elapsed(),
            },
            Err(failure) => Sent {
                result: AttemptResult::Error(failure.kind),
                error_message: Some(failure.message),
                response_body: None,
                duration: started.elapsed(),
            },
        }
    }

    async fn to_rabbitmq(
        &self,
        to: &RabbitExchange,
        message: &Message<'_>,
        written: &AtomicBool,
    ) -> Result<Answer, Failure> {
        let key = to.url.clone();
        let delivery = message.delivery;
        let routing_key = to.routing_key_for(delivery.event.event_type.as_str());
        let publish = amqp::Publish {
            exchange: &to.exchange,
            routing_key: &routing_key,
            message_id: delivery.id.as_str(),
            kind: delivery.event.event_type.as_str(),
            headers: &message.headers,
        };
        // A pooled connection its server closed fails as a connection failure: once more on a new one.
        if let Some(mut connection) = self.rabbitmq.take(&key) {
            let confirmed = connection.publish(&publish, message.body, written).await;
            if connection.reusable() {
                self.rabbitmq.put(key.clone(), connection);
            }
            match confirmed {
                Err(failure) if failure.kind == ErrorKind::Connect => {}
                answered => return answered.map(Answer::acknowledged),
            }
        }
        let mut connection = amqp::Connection::open(&to.url, &self.policy, self.connect_timeout).await?;
        let confirmed = connection.publish(&publish, message.body, written).await;
        if connection.reusable() {
            self.rabbitmq.put(key, connection);
        }
        confirmed.map(Answer::acknowledged)
    }

    /// Produces the envelope as one record, its headers the signature and custom headers, on a pooled producer or
    /// a new one (a pooled producer resends once on a new connection when its kept one died, which its idempotence
    /// makes safe).
    async fn to_kafka(&self, to: &KafkaTopic, message: &Message<'_>, written: &AtomicBool) -> Result<Answer, Failure> {
        let pool_key = serde_json::to_string(to).unwrap_or_default();
        let event = &message.delivery.event;
        let key = match to.key {
            KafkaKey::CallId => Some(event.data.call_id().as_bytes()).filter(|k| !k.is_empty()),
            KafkaKey::EventId => Some(event.id.as_str().as_bytes()),
            KafkaKey::None => None,
        };
        let record = kafka::record::Record {
            key,
            value: message.body,
            headers: &message.headers,
            timestamp_ms: chrono::Utc::now().timestamp_millis(),
        };
        let mut producer = match self.kafka.take(&pool_key) {
            Some(producer) => producer,
            None => kafka::Producer::open(to, &self.policy, self.connect_timeout).await?,
        };
        let stored = producer.produce(to, &record, &self.policy, self.connect_timeout, written).await;
        if producer.reusable() {
            self.kafka.put(pool_key, producer);
        }
        stored.map(Answer::acknowledged)
    }

    /// Hands the delivery to the webhook's `courier listen` and waits for what its local target answered.
    async fn to_relay(&self, message: &Message<'_>) -> Result<Answer, Failure> {
        use courier_scheduler::relay::{RelayAnswer, Relayed};
        let delivery = message.delivery;
        let (answer, answered) = tokio::sync::oneshot::channel();
        let relayed = Relayed {
            delivery_id: delivery.id.as_str().to_owned(),
            attempt: delivery.attempt,
            event_id: delivery.event.id.as_str().to_owned(),
            event_type: delivery.event.event_type.as_str().to_owned(),
            headers: message.headers.clone(),
            body: message.body.to_vec(),
            answer,
        };
        let no_listener = |why: String| Failure::new(ErrorKind::NoListener, why);
        self.relays.send(&delivery.webhook.id, relayed).map_err(|why| no_listener(why.to_string()))?;
        match answered.await {
            Ok(RelayAnswer::Response { status, body, truncated }) => Ok(Answer { status, body, truncated }),
            Ok(RelayAnswer::Unreachable { timed_out, why }) => {
                let kind = if timed_out { ErrorKind::Timeout } else { ErrorKind::Connect };
                Err(Failure::new(kind, format!("the listener could not reach its target: {why}")))
            }
            Err(_) => Err(no_listener("the listener disconnected before answering".to_owned())),
        }
    }

    async fn to_redis(&self, to: &RedisStream, message: &Message<'_>, written: &AtomicBool) -> Result<Answer, Failure> {
        let key = to.url.clone();
        let delivery_id = message.delivery.id.as_str().as_bytes();
        let mut fields: Vec<(&str, &[u8])> = vec![("body", message.body), ("delivery_id", delivery_id)];
        fields.extend(message.headers.iter().map(|(name, value)| (name.as_str(), value.as_bytes())));
        // A pooled connection its server closed fails as a connection failure: try once more on a new one. Not
        // after an answer (a refusal would only repeat) nor a timeout (the entry may be stored already).
        if let Some(mut connection) = self.redis.take(&key) {
            match connection.xadd(&to.stream, to.maxlen, &fields, written).await {
                Ok(id) => {
                    self.redis.put(key, connection);
                    return Ok(Answer::acknowledged(id));
                }
                Err(failure) if failure.kind != ErrorKind::Connect => return Err(failure),
                Err(_) => {}
            }
        }
        let mut connection = redis::Connection::open(&to.url, &self.policy, self.connect_timeout).await?;
        let id = connection.xadd(&to.stream, to.maxlen, &fields, written).await?;
        self.redis.put(key, connection);
        Ok(Answer::acknowledged(id))
    }

    async fn to_nats(&self, to: &NatsSubject, message: &Message<'_>, written: &AtomicBool) -> Result<Answer, Failure> {
        let key = serde_json::to_string(&(&to.url, &to.credentials)).unwrap_or_else(|_| to.url.clone());
        let mut headers = vec![("Nats-Msg-Id".to_owned(), message.delivery.id.as_str().to_owned())];
        headers.extend(message.headers.iter().cloned());
        // After a dead pooled connection, publish again on a new one. JetStream drops a second publish with the
        // same Nats-Msg-Id within the stream's duplicate window (2 minutes by default), so this does not store the
        // message twice; a retried attempt minutes later may (delivery is at least once; consumers deduplicate on
        // the event id, as HTTP receivers do).
        if let Some(mut connection) = self.nats.take(&key) {
            let ack = connection.publish(&to.subject, &headers, message.body, written).await;
            if connection.reusable() {
                self.nats.put(key.clone(), connection);
            }
            match ack {
                Err(failure) if failure.kind == ErrorKind::Connect => {}
                answered => return answered.map(Answer::acknowledged),
            }
        }
        let mut connection =
            nats::Connection::open(&to.url, to.credentials.as_ref(), &self.policy, self.connect_timeout).await?;
        let ack = connection.publish(&to.subject, &headers, message.body, written).await;
        // A JetStream refusal is an answer on a working connection; an `-ERR` or a broken read is not.
        if connection.reusable() {
            self.nats.put(key, connection);
        }
        ack.map(Answer::acknowledged)
    }
}

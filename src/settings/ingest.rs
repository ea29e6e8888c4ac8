//! `COURIER_INGEST_KAFKA_*`: events taken from Kafka topics (off unless brokers are named).

use anyhow::{Context, bail};
use courier_core::destination::kafka::{KafkaSasl, SaslMechanism, split_host_port};

use super::layers::{Layers, boolean};

/// Where `courier serve` consumes events from, when it does.
#[derive(Clone)]
pub struct KafkaIngestSettings {
    /// `COURIER_INGEST_KAFKA_BROKERS`: comma-separated `host:port` of bootstrap brokers.
    pub brokers: Vec<String>,
    /// `COURIER_INGEST_KAFKA_TOPICS`: comma-separated topics.
    pub topics: Vec<String>,
    /// `COURIER_INGEST_KAFKA_GROUP`: the consumer group every Courier process joins (`courier`).
    pub group: String,
    /// `COURIER_INGEST_KAFKA_TLS`: TLS to every broker.
    pub tls: bool,
    /// `COURIER_INGEST_KAFKA_SASL_MECHANISM` (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`), `…_USERNAME`, `…_PASSWORD`.
    pub sasl: Option<KafkaSasl>,
}

impl std::fmt::Debug for KafkaIngestSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaIngestSettings")
            .field("brokers", &self.brokers)
            .field("topics", &self.topics)
            .field("group", &self.group)
            .field("tls", &self.tls)
            .field("sasl", &self.sasl.as_ref().map(|s| s.mechanism))
            .finish()
    }
}

fn list(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

impl KafkaIngestSettings {
    /// `None` when no brokers are named.
    pub(super) fn from_layers(l: &Layers) -> anyhow::Result<Option<Self>> {
        let brokers = l.parse("ingest_kafka_brokers", |s| {
            let brokers = list(s);
            if let Some(bad) = brokers.iter().find(|b| split_host_port(b).is_none()) {
                bail!("`{bad}` is not host:port");
            }
            Ok(brokers)
        })?;
        let topics = l.parse("ingest_kafka_topics", |s| Ok(list(s)))?;
        let group = l.parse("ingest_kafka_group", |s| Ok(s.trim().to_owned()))?;
        let tls = l.parse("ingest_kafka_tls", boolean)?;
        let mechanism = l.parse("ingest_kafka_sasl_mechanism", |s| match s.trim() {
            "" => Ok(None),
            "PLAIN" => Ok(Some(SaslMechanism::Plain)),
            "SCRAM-SHA-256" => Ok(Some(SaslMechanism::ScramSha256)),
            "SCRAM-SHA-512" => Ok(Some(SaslMechanism::ScramSha512)),
            _ => bail!("must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
        })?;
        let username = l.parse("ingest_kafka_sasl_username", |s| Ok(s.to_owned()))?;
        let password = l.parse("ingest_kafka_sasl_password", |s| Ok(s.to_owned()))?;
        if brokers.is_empty() {
            return Ok(None);
        }
        if topics.is_empty() {
            bail!("COURIER_INGEST_KAFKA_TOPICS is required when COURIER_INGEST_KAFKA_BROKERS is set");
        }
        if group.is_empty() {
            bail!("COURIER_INGEST_KAFKA_GROUP must not be empty");
        }
        let sasl = mechanism
            .map(|mechanism| {
                (!username.is_empty() && !password.is_empty())
                    .then_some(KafkaSasl { mechanism, username, password })
                    .context("COURIER_INGEST_KAFKA_SASL_USERNAME and _PASSWORD are required with a SASL mechanism")
            })
            .transpose()?;
        Ok(Some(Self { brokers, topics, group, tls, sasl }))
    }
}

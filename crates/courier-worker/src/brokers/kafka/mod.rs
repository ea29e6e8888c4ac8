//! A Kafka producer of its own, as the other brokers' clients are: idempotent (a producer id, and a sequence per
//! partition the broker checks, so a record resent on the same producer is stored once) and `acks=all`, one record
//! in flight per producer. A producer is taken from the per-destination pool for one attempt and put back only
//! when it is still in step with the cluster; anything unexpected (a leader moved, a sequence lost, a timeout
//! mid-request) drops it, and the next attempt starts over with fresh metadata and a new producer id.
//!
//! Every address it connects to goes through the SSRF guard: the bootstrap brokers the tenant named and every
//! broker the cluster advertises in its metadata, which a hostile cluster could point anywhere.

pub mod consumer;
mod group;
pub mod record;
mod requests;
mod wire;

use std::collections::HashMap;
use std::time::Duration;

use courier_core::ErrorKind;
use courier_core::destination::KafkaTopic;

use super::connect::{Failure, open};
use crate::ssrf::TargetPolicy;
use record::Record;
use wire::Connection;

/// A producer for one destination's topic.
pub struct Producer {
    brokers: HashMap<i32, (String, u16)>,
    /// The topic's partitions in index order, with their leaders' node ids.
    partitions: Vec<(i32, i32)>,
    /// A connection per leader, opened when first produced to.
    connections: HashMap<i32, Connection>,
    id: i64,
    epoch: i16,
    /// The next sequence number of each partition this producer wrote to.
    sequences: HashMap<i32, i32>,
    /// Where an unkeyed record goes next.
    next: usize,
    reusable: bool,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("id", &self.id).field("partitions", &self.partitions.len()).finish()
    }
}

/// Where a record was stored: the acknowledgement an attempt records as the answer's body.
fn acknowledgement(topic: &str, partition: i32, offset: i64) -> Vec<u8> {
    let answer = serde_json::json!({"topic": topic, "partition": partition, "offset": offset});
    answer.to_string().into_bytes()
}

impl Producer {
    /// Learns the topic's partitions from the first bootstrap broker that answers and gets a producer id.
    pub async fn open(to: &KafkaTopic, policy: &TargetPolicy, timeout: Duration) -> Result<Self, Failure> {
        let mut last = Failure::new(ErrorKind::Connect, "no bootstrap broker given");
        for (host, port) in to.bootstrap() {
            match Self::open_via(host, port, to, policy, timeout).await {
                Ok(producer) => return Ok(producer),
                // A refusal (the topic, the credentials) is the cluster's answer; another broker would repeat it.
                Err(failure) if failure.kind == ErrorKind::Refused => return Err(failure),
                Err(failure) => last = failure,
            }
        }
        Err(last)
    }

    async fn open_via(
        host: &str,
        port: u16,
        to: &KafkaTopic,
        policy: &TargetPolicy,
        timeout: Duration,
    ) -> Result<Self, Failure> {
        let mut bootstrap = connect(host, port, to, policy, timeout).await?;
        let mut metadata = requests::metadata(&mut bootstrap, &[&to.topic]).await?;
        let (id, epoch) = requests::init_producer_id(&mut bootstrap).await?;
        Ok(Self {
            partitions: metadata.topics.remove(&to.topic).unwrap_or_default(),
            brokers: metadata.brokers,
            connections: HashMap::new(),
            id,
            epoch,
            sequences: HashMap::new(),
            next: 0,
            reusable: true,
        })
    }

    /// Whether the producer may serve another attempt.
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// Writes `record` to its partition (by its key, or the next in turn) and waits for every in-sync replica;
    /// `written` is set once the request went out. A failure leaves the producer unusable.
    pub async fn produce(
        &mut self,
        to: &KafkaTopic,
        record: &Record<'_>,
        policy: &TargetPolicy,
        timeout: Duration,
        written: &std::sync::atomic::AtomicBool,
    ) -> Result<Vec<u8>, Failure> {
        self.reusable = false;
        let index = match record.key {
            Some(key) => record::partition_for(key, self.partitions.len()),
            None => {
                self.next = self.next.wrapping_add(1);
                self.next % self.partitions.len()
            }
        };
        let (partition, leader) = self.partitions[index];
        let Some((host, port)) = self.brokers.get(&leader).cloned() else {
            let why = format!("partition {partition} of {} has no leader the cluster names", to.topic);
            return Err(Failure::new(ErrorKind::Other, why));
        };
        let sequence = self.sequences.get(&partition).copied().unwrap_or(0);
        let batch = record::batch(record, record::Producer { id: self.id, epoch: self.epoch, sequence });
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let pooled = self.connections.remove(&leader);
        let reused = pooled.is_some();
        let mut connection = match pooled {
            Some(connection) => connection,
            None => connect(&host, port, to, policy, timeout).await?,
        };
        written.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut answer = requests::produce(&mut connection, &to.topic, partition, &batch, timeout_ms).await;
        if reused && answer.as_ref().is_err_and(|failure| failure.kind == ErrorKind::Connect) {
            // A kept connection the broker closed: the same batch again on a new one. Same producer, same sequence,
            // so the broker stores it once even if the first copy got through.
            connection = connect(&host, port, to, policy, timeout).await?;
            answer = requests::produce(&mut connection, &to.topic, partition, &batch, timeout_ms).await;
        }
        let (code, offset) = answer?;
        self.connections.insert(leader, connection);
        match code {
            // A duplicate is a record this producer already stored (a resend after a lost answer).
            requests::NONE | requests::DUPLICATE_SEQUENCE_NUMBER => {
                self.sequences.insert(partition, sequence.wrapping_add(1) & i32::MAX);
                self.reusable = true;
                Ok(acknowledgement(&to.topic, partition, offset))
            }
            code => Err(requests::failure(code, &format!("a record for {}/{partition}", to.topic))),
        }
    }
}

/// A connection to one broker, through the guard, over TLS when the destination asks, authenticated when it has
/// SASL credentials.
async fn connect(
    host: &str,
    port: u16,
    to: &KafkaTopic,
    policy: &TargetPolicy,
    timeout: Duration,
) -> Result<Connection, Failure> {
    let mut connection = Connection::new(open(host, port, to.tls, policy, timeout).await?);
    if let Some(sasl) = &to.sasl {
        requests::authenticate(&mut connection, sasl).await?;
    }
    Ok(connection)
}

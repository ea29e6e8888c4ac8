//! The requests the producer sends, each at one non-flexible version every Kafka broker since 1.0 (and Tansu)
//! answers, with its response parsed: SASL (`SaslHandshake` v1, `SaslAuthenticate` v1), `Metadata` v4 and
//! `Produce` v3; and `InitProducerId` v3, a flexible version (Tansu reads the producer id and epoch a request
//! carries only from v3 on, and answers an older one with an error).

use std::collections::HashMap;

use courier_core::ErrorKind;
use courier_core::destination::kafka::{KafkaSasl, SaslMechanism};
use courier_core::scram::{Hash, Scram};

use super::super::connect::Failure;
use super::wire::{Connection, Reader, Request, malformed};

const PRODUCE: i16 = 0;
const METADATA: i16 = 3;
const SASL_HANDSHAKE: i16 = 17;
const INIT_PRODUCER_ID: i16 = 22;
const SASL_AUTHENTICATE: i16 = 36;

/// Error codes with a meaning of their own here.
pub const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const REQUEST_TIMED_OUT: i16 = 7;
pub const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;

/// What a Kafka error code means for an attempt: a refusal the broker will repeat (the topic, the authorisation,
/// the record), a timeout, or anything else (a leader moving, a producer's sequence lost), after which the
/// producer starts over with fresh metadata.
pub fn failure(code: i16, what: &str) -> Failure {
    let name = match code {
        2 => "CORRUPT_MESSAGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        10 => "MESSAGE_TOO_LARGE",
        19 => "NOT_ENOUGH_REPLICAS",
        20 => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
        29 => "TOPIC_AUTHORIZATION_FAILED",
        31 => "CLUSTER_AUTHORIZATION_FAILED",
        33 => "UNSUPPORTED_SASL_MECHANISM",
        34 => "ILLEGAL_SASL_STATE",
        35 => "UNSUPPORTED_VERSION",
        45 => "OUT_OF_ORDER_SEQUENCE_NUMBER",
        47 => "INVALID_PRODUCER_EPOCH",
        58 => "SASL_AUTHENTICATION_FAILED",
        59 => "UNKNOWN_PRODUCER_ID",
        87 => "INVALID_RECORD",
        _ => "an error",
    };
    let kind = match code {
        2 | 3 | 10 | 29 | 31 | 33 | 58 | 87 => ErrorKind::Refused,
        REQUEST_TIMED_OUT => ErrorKind::Timeout,
        _ => ErrorKind::Other,
    };
    Failure::new(kind, format!("kafka answered {what} with {name} ({code})"))
}

/// Authenticates the connection: the handshake names the mechanism, then PLAIN's one message or SCRAM's two.
pub async fn authenticate(connection: &mut Connection, sasl: &KafkaSasl) -> Result<(), Failure> {
    let mut handshake = Request::new(SASL_HANDSHAKE, 1);
    handshake.string(sasl.mechanism.name());
    let body = connection.call(handshake).await?;
    let code = Reader::new(&body).i16()?;
    if code != NONE {
        return Err(failure(code, &format!("the SASL mechanism {}", sasl.mechanism.name())));
    }
    let hash = match sasl.mechanism {
        SaslMechanism::Plain => {
            let message = format!("\0{}\0{}", sasl.username, sasl.password);
            exchange(connection, message.as_bytes()).await?;
            return Ok(());
        }
        SaslMechanism::ScramSha256 => Hash::Sha256,
        SaslMechanism::ScramSha512 => Hash::Sha512,
    };
    let mut scram = Scram::new(hash, &sasl.username, &sasl.password);
    let refused = |e: courier_core::scram::ScramError| Failure::new(ErrorKind::Refused, format!("SCRAM: {e}"));
    let server_first = exchange(connection, scram.client_first().as_bytes()).await?;
    let client_final = scram.client_final(&String::from_utf8_lossy(&server_first)).map_err(refused)?;
    let server_final = exchange(connection, client_final.as_bytes()).await?;
    scram.verify(&String::from_utf8_lossy(&server_final)).map_err(refused)
}

/// One `SaslAuthenticate` round: what the server answered to `message`.
async fn exchange(connection: &mut Connection, message: &[u8]) -> Result<Vec<u8>, Failure> {
    let mut request = Request::new(SASL_AUTHENTICATE, 1);
    request.bytes(message);
    let body = connection.call(request).await?;
    let mut reader = Reader::new(&body);
    let code = reader.i16()?;
    let why = reader.string()?;
    if code != NONE {
        let why: String = why.chars().take(200).collect();
        let mut failed = failure(code, "SASL authentication");
        failed.message = format!("{}: {why}", failed.message);
        return Err(failed);
    }
    Ok(reader.bytes()?.to_vec())
}

/// The cluster as some topics see it.
#[derive(Debug)]
pub struct Metadata {
    /// Every broker by node id: the address it advertises.
    pub brokers: HashMap<i32, (String, u16)>,
    /// Each topic asked for, its partitions in index order, each with its leader's node id (-1: none now).
    pub topics: HashMap<String, Vec<(i32, i32)>>,
}

/// `Metadata` for `topics`, never creating one: an unknown topic is a refusal.
pub async fn metadata(connection: &mut Connection, topics: &[&str]) -> Result<Metadata, Failure> {
    let mut request = Request::new(METADATA, 4);
    request.array(topics.len());
    for topic in topics {
        request.string(topic);
    }
    request.i8(0);
    let body = connection.call(request).await?;
    let mut reader = Reader::new(&body);
    reader.i32()?; // throttle time
    let mut brokers = HashMap::new();
    for _ in 0..reader.array()? {
        let node = reader.i32()?;
        let host = reader.string()?;
        let port = reader.i32()?;
        reader.string()?; // rack
        let port = u16::try_from(port).map_err(|_| malformed("a broker port out of range"))?;
        brokers.insert(node, (host, port));
    }
    reader.string()?; // cluster id
    reader.i32()?; // controller id
    let mut found: HashMap<String, Vec<(i32, i32)>> = HashMap::new();
    for _ in 0..reader.array()? {
        let code = reader.i16()?;
        let name = reader.string()?;
        reader.i8()?; // internal
        let count = reader.array()?;
        let asked = topics.contains(&name.as_str());
        if asked && code != NONE {
            return Err(failure(code, &format!("metadata for topic {name}")));
        }
        let mut partitions = Vec::new();
        for _ in 0..count {
            reader.i16()?; // the partition's own error: a leader elsewhere is what matters
            let index = reader.i32()?;
            let leader = reader.i32()?;
            for _ in 0..reader.array()? {
                reader.i32()?; // replicas
            }
            for _ in 0..reader.array()? {
                reader.i32()?; // in-sync replicas
            }
            partitions.push((index, leader));
        }
        if asked && !partitions.is_empty() {
            partitions.sort_unstable();
            found.insert(name, partitions);
        }
    }
    if let Some(missing) = topics.iter().find(|t| !found.contains_key(**t)) {
        return Err(failure(UNKNOWN_TOPIC_OR_PARTITION, &format!("metadata for topic {missing}")));
    }
    Ok(Metadata { brokers, topics: found })
}

/// A new producer id and epoch for an idempotent producer (no transactions).
pub async fn init_producer_id(connection: &mut Connection) -> Result<(i64, i16), Failure> {
    let mut request = Request::flexible(INIT_PRODUCER_ID, 3);
    request.compact_null_string().i32(60_000).i64(-1).i16(-1).no_tagged_fields();
    let body = connection.call(request).await?;
    let mut reader = Reader::new(&body);
    reader.tagged_fields()?; // the response header's (v1)
    reader.i32()?; // throttle time
    let code = reader.i16()?;
    if code != NONE {
        return Err(failure(code, "a producer id request"));
    }
    Ok((reader.i64()?, reader.i16()?))
}

/// `Produce` with `acks=all` of one batch to one partition: the error code and the record's offset.
pub async fn produce(
    connection: &mut Connection,
    topic: &str,
    partition: i32,
    batch: &[u8],
    timeout_ms: i32,
) -> Result<(i16, i64), Failure> {
    let mut request = Request::new(PRODUCE, 3);
    request.null_string().i16(-1).i32(timeout_ms).array(1).string(topic).array(1).i32(partition).bytes(batch);
    let body = connection.call(request).await?;
    let mut reader = Reader::new(&body);
    for _ in 0..reader.array()? {
        let name = reader.string()?;
        for _ in 0..reader.array()? {
            let index = reader.i32()?;
            let code = reader.i16()?;
            let offset = reader.i64()?;
            reader.i64()?; // log append time
            if name == topic && index == partition {
                return Ok((code, offset));
            }
        }
    }
    Err(malformed("a produce response without the partition"))
}

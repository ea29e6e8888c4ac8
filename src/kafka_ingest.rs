//! Events taken from Kafka topics (`COURIER_INGEST_KAFKA_*`), accepted exactly as `POST /api/v1/events` accepts
//! them: the same JSON and checks, the same idempotency by event id, the same fan-out.
//!
//! A record's headers name its owner: `courier-tenant` (the tenant id) and `courier-environment` (`live` or
//! `test`). Each poll's records are accepted in one transaction, partitions' records in their order; only then are
//! their offsets committed, so a crash or a rebalance reads again from the last commit and idempotency absorbs the
//! repeats (a record without an `id` gets one made of its topic, partition and offset, so it repeats too). A record
//! that cannot be accepted is set aside (`ingest_rejects`, `courier ingest rejects`) and its offset committed with
//! the rest: it never blocks its partition.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use courier_core::{Environment, EventId, TenantId};
use courier_scheduler::ingest::{Refused, Workers, accept_all};
use courier_store::Owner;
use courier_store::events::NewEvent;
use courier_store::ingest_rejects::{self, FIRST_BYTES, Reject};
use courier_worker::brokers::kafka::consumer::{Consumer, ConsumerConfig, Polled};
use courier_worker::brokers::kafka::record::{Decoded, Read};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::settings::KafkaIngestSettings;

/// How long a fetch waits for new records.
const POLL_WAIT: Duration = Duration::from_millis(500);

/// Consumes until `stop`, under the process's supervision: an error ends the loop (its caller restarts it, and the
/// new member reads on from the group's last commit).
pub async fn run(
    settings: KafkaIngestSettings,
    timeout: Duration,
    pool: PgPool,
    workers: Workers,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let config = ConsumerConfig {
        brokers: settings.brokers,
        topics: settings.topics,
        group: settings.group,
        sasl: settings.sasl,
        tls: settings.tls,
        timeout,
    };
    // The brokers are the operator's own: every address is allowed (the guard is for tenants' destinations).
    let anywhere = courier_core::target::TargetPolicy::new(vec!["0.0.0.0/0".parse()?, "::/0".parse()?]);
    let mut consumer = tokio::select! {
        joined = Consumer::join(config, anywhere) => joined.map_err(|f| anyhow::anyhow!("joining the consumer group: {}", f.message))?,
        () = stop.cancelled() => return Ok(()),
    };
    tracing::info!(partitions = ?consumer.partitions(), "kafka ingest: joined the consumer group");
    let consumed = consume(&mut consumer, &pool, &workers, &stop).await;
    // Also after a failure: the group deals this member's partitions out at once instead of after its session.
    consumer.leave().await;
    consumed
}

/// Polls, accepts and commits until `stop`.
async fn consume(
    consumer: &mut Consumer,
    pool: &PgPool,
    workers: &Workers,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut tenants = Tenants::default();
    loop {
        let polled = tokio::select! {
            polled = consumer.poll(POLL_WAIT) => polled.map_err(|f| anyhow::anyhow!("kafka: {}", f.message))?,
            () = stop.cancelled() => return Ok(()),
        };
        for p in &polled {
            let (topic, partition) = (&p.partition.0, p.partition.1.to_string());
            metrics::gauge!("courier_ingest_kafka_lag", "topic" => topic.clone(), "partition" => partition)
                .set(p.lag as f64);
        }
        let offsets: Vec<_> =
            polled.iter().filter(|p| p.next > p.from).map(|p| (p.partition.clone(), p.next)).collect();
        if offsets.is_empty() {
            continue;
        }
        let started = Instant::now();
        accept(pool, workers, &mut tenants, &polled).await?;
        metrics::histogram!("courier_ingest_kafka_batch_seconds").record(started.elapsed().as_secs_f64());
        consumer.commit(&offsets).await.map_err(|f| anyhow::anyhow!("committing offsets: {}", f.message))?;
    }
}

/// What one poll read, by owner (its events in the order read, and where each came from, for a conflict's
/// reject), and what is set aside already.
type Sorted = (Vec<(Owner, Vec<NewEvent>, Vec<Reject>)>, Vec<Reject>);

/// Accepts what one poll read, in one transaction, and sets aside what cannot be accepted.
async fn accept(pool: &PgPool, workers: &Workers, tenants: &mut Tenants, polled: &[Polled]) -> anyhow::Result<()> {
    let (requests, mut rejects) = sort(pool, tenants, polled).await?;
    let mut accepted: usize = requests.iter().map(|(_, events, _)| events.len()).sum();
    if !requests.is_empty() {
        let (owned, origins): (Vec<_>, Vec<_>) = requests.into_iter().map(|(o, e, r)| ((o, e), r)).unzip();
        let answers = accept_all(pool, workers, owned).await?;
        for (answers, origins) in answers.into_iter().zip(origins) {
            for (answer, mut origin) in answers.into_iter().zip(origins) {
                if let Err(Refused::Conflict) = answer {
                    origin.message = "the event id was already used for a different event".to_owned();
                    rejects.push(origin);
                    accepted -= 1;
                }
            }
        }
    }
    ingest_rejects::record(pool, &rejects).await?;
    metrics::counter!("courier_ingest_kafka_records_total", "outcome" => "accepted").increment(accepted as u64);
    metrics::counter!("courier_ingest_kafka_records_total", "outcome" => "rejected").increment(rejects.len() as u64);
    for reject in &rejects {
        metrics::counter!("courier_ingest_rejected_total", "reason" => reject.reason).increment(1);
    }
    if !rejects.is_empty() {
        tracing::warn!(rejected = rejects.len(), "kafka ingest: set records aside (courier ingest rejects lists them)");
    }
    Ok(())
}

/// Reads each record of a poll into its owner's events, or a reject.
async fn sort(pool: &PgPool, tenants: &mut Tenants, polled: &[Polled]) -> anyhow::Result<Sorted> {
    let (mut requests, mut rejects): Sorted = (Vec::new(), Vec::new());
    for p in polled {
        let origin = |offset, reason, message: String, first_bytes: &[u8], tenant| Reject {
            topic: p.partition.0.clone(),
            partition: p.partition.1,
            offset,
            reason,
            message,
            first_bytes: first_bytes[..first_bytes.len().min(FIRST_BYTES)].to_vec(),
            tenant,
        };
        for decoded in &p.decoded {
            let record = match decoded {
                Decoded::Unreadable { first, last, why } => {
                    rejects.push(origin(*first, "unreadable", format!("offsets {first} to {last}: {why}"), &[], None));
                    continue;
                }
                Decoded::Record(record) => record,
            };
            let value = record.value.as_deref().unwrap_or_default();
            let tenant = header(record, "courier-tenant").map(str::to_owned);
            match event_of(pool, tenants, &p.partition, record).await? {
                Ok((owner, event)) => {
                    let conflict = origin(record.offset, "conflict", String::new(), value, tenant);
                    match requests.iter_mut().find(|(o, _, _)| *o == owner) {
                        Some((_, events, origins)) => {
                            events.push(event);
                            origins.push(conflict);
                        }
                        None => requests.push((owner, vec![event], vec![conflict])),
                    }
                }
                Err((reason, message)) => rejects.push(origin(record.offset, reason, message, value, tenant)),
            }
        }
    }
    Ok((requests, rejects))
}

/// A header's value as text.
fn header<'r>(record: &'r Read, name: &str) -> Option<&'r str> {
    record.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// The owner a record names and the event it holds; why not, as a reason and a message.
async fn event_of(
    pool: &PgPool,
    tenants: &mut Tenants,
    partition: &(String, i32),
    record: &Read,
) -> anyhow::Result<Result<(Owner, NewEvent), (&'static str, String)>> {
    let Some(tenant) = header(record, "courier-tenant") else {
        return Ok(Err(("no_tenant", "the record has no courier-tenant header".to_owned())));
    };
    let Ok(tenant) = tenant.parse::<TenantId>() else {
        return Ok(Err(("unknown_tenant", format!("`{}` is not a tenant id", safe(tenant)))));
    };
    if !tenants.exists(pool, &tenant).await? {
        return Ok(Err(("unknown_tenant", format!("no tenant {tenant}"))));
    }
    let environment = match header(record, "courier-environment") {
        Some("live") => Environment::Live,
        Some("test") => Environment::Test,
        other => {
            let named = other.map_or("no courier-environment header".to_owned(), |e| format!("`{}`", safe(e)));
            return Ok(Err(("unknown_environment", format!("{named}: must be live or test"))));
        }
    };
    let value = record.value.as_deref().unwrap_or_default();
    let made_up = || derived_id(&partition.0, partition.1, record.offset);
    Ok(match courier_api::routes::events::event_from_json(value, made_up) {
        Ok(event) => Ok((Owner { tenant, environment }, event)),
        Err(not) => Err((not.reason, not.message)),
    })
}

/// The id of a record's event that names none: the same every time the record is read.
fn derived_id(topic: &str, partition: i32, offset: i64) -> EventId {
    // FNV-1a: a topic name (up to 249 bytes) into 16 hex digits, which the id's alphabet takes.
    let hash = topic.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    EventId::parse(&format!("evt_kafka_{hash:016x}_{partition}_{offset}")).expect("a valid id by construction")
}

/// At most 64 visible characters of a header, for a message.
fn safe(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// Tenants known to exist (they are never deleted while their events arrive; one that is not found is asked for
/// again next time, since it may be created meanwhile).
#[derive(Default)]
struct Tenants {
    known: HashSet<TenantId>,
}

impl Tenants {
    async fn exists(&mut self, pool: &PgPool, tenant: &TenantId) -> anyhow::Result<bool> {
        if self.known.contains(tenant) {
            return Ok(true);
        }
        let found = courier_store::tenants::get(pool, *tenant).await?.is_some();
        if found {
            self.known.insert(*tenant);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_without_an_id_gets_the_same_one_each_time() {
        let id = derived_id("agent-studio.events", 2, 41);
        assert_eq!(id, derived_id("agent-studio.events", 2, 41));
        assert_ne!(id, derived_id("agent-studio.events", 2, 42));
        assert_ne!(id, derived_id("other", 2, 41));
        assert!(id.as_str().starts_with("evt_kafka_"));
    }
}

//! A member of a consumer group, for ingest: it joins the group (the leader assigns every partition of the
//! subscribed topics round-robin over the members), starts each partition at the group's committed offset (or the
//! earliest still in the log), fetches, and commits only what its caller says was stored. Its position moves with
//! its commits, so a failure anywhere means joining again from the last commit: what was read and not committed is
//! read again, never skipped.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use courier_core::ErrorKind;
use courier_core::destination::kafka::{KafkaSasl, split_host_port};

use super::super::connect::{Failure, open};
use super::group::{self, Joined, Partition};
use super::record::{Decoded, decode};
use super::requests;
use super::wire::Connection;
use crate::ssrf::TargetPolicy;

/// How long the group waits for a silent member before giving its partitions to the others (and, after a crash,
/// how long the member that comes back waits for the group to drop the dead one).
const SESSION_TIMEOUT_MS: i32 = 10_000;
/// Joins in a row a member tries while the group keeps rebalancing.
const MAX_JOINS: usize = 20;
/// How often a member says it is alive.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);
/// The most bytes one fetch asks for (below the largest response the client reads).
const FETCH_MAX_BYTES: i32 = 3 * 1024 * 1024;
/// About the most records a poll returns of one partition (whole batches up to it), so one poll's transaction stays
/// a few thousand events at most; the rest is fetched again from there.
const MAX_RECORDS: usize = 1_000;

/// Where and how to consume.
#[derive(Clone)]
pub struct ConsumerConfig {
    /// `host:port` of the bootstrap brokers.
    pub brokers: Vec<String>,
    pub topics: Vec<String>,
    pub group: String,
    pub sasl: Option<KafkaSasl>,
    pub tls: bool,
    /// Connecting, and each request but a join (which waits for the group to form) and a fetch.
    pub timeout: Duration,
}

/// One partition's fetch: what it held from the position on, where the next fetch starts, and how far behind the
/// log's end that is.
#[derive(Debug)]
pub struct Polled {
    pub partition: Partition,
    /// The position the fetch started at.
    pub from: i64,
    pub decoded: Vec<Decoded>,
    pub next: i64,
    pub lag: i64,
}

pub struct Consumer {
    config: ConsumerConfig,
    policy: TargetPolicy,
    coordinator: Connection,
    joined: Joined,
    brokers: HashMap<i32, (String, u16)>,
    leaders: HashMap<Partition, i32>,
    connections: HashMap<i32, Connection>,
    /// Every partition of the subscribed topics, which a leader deals out.
    every: Vec<Partition>,
    /// This member's partitions and the next offset to read from each.
    positions: Vec<(Partition, i64)>,
    heartbeat: Instant,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("positions", &self.positions).finish_non_exhaustive()
    }
}

impl Consumer {
    /// Joins the group and finds where each assigned partition starts. The brokers are the operator's, not a
    /// tenant's, so `policy` is whatever the operator allows (any address, by default).
    pub async fn join(config: ConsumerConfig, policy: TargetPolicy) -> Result<Self, Failure> {
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        let mut last = Failure::new(ErrorKind::Connect, "no bootstrap broker given");
        // The cluster's metadata and the group's coordinator, from the first bootstrap broker that answers.
        let mut found = None;
        for (host, port) in config.brokers.iter().filter_map(|b| split_host_port(b)) {
            let attempt = async {
                let mut bootstrap = connect(&config, &policy, host, port).await?;
                let metadata = requests::metadata(&mut bootstrap, &topics).await?;
                let coordinator = group::find_coordinator(&mut bootstrap, &config.group).await?;
                Ok::<_, Failure>((metadata, coordinator))
            };
            match tokio::time::timeout(config.timeout, attempt).await {
                Ok(Ok(answer)) => {
                    found = Some(answer);
                    break;
                }
                Ok(Err(failure)) => last = failure,
                Err(_) => last = Failure::new(ErrorKind::Timeout, format!("{host}:{port} did not answer in time")),
            }
        }
        let (metadata, (host, port)) = found.ok_or(last)?;
        let coordinator = connect(&config, &policy, &host, port).await?;
        let every = metadata
            .topics
            .iter()
            .flat_map(|(topic, partitions)| partitions.iter().map(move |(index, _)| (topic.clone(), *index)))
            .collect();
        let leaders = metadata
            .topics
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions.iter().map(move |(index, leader)| ((topic.clone(), *index), *leader))
            })
            .collect();
        let joined = Joined { member_id: String::new(), generation: -1, leader: false, members: Vec::new() };
        let mut consumer = Self {
            config,
            policy,
            coordinator,
            joined,
            every,
            brokers: metadata.brokers,
            leaders,
            connections: HashMap::new(),
            positions: Vec::new(),
            heartbeat: Instant::now(),
        };
        consumer.rejoin().await?;
        Ok(consumer)
    }

    /// Joins the group (again, as the same member when it has an id) until a sync completes, then starts each
    /// assigned partition where the group left it.
    async fn rejoin(&mut self) -> Result<(), Failure> {
        let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
        for _ in 0..MAX_JOINS {
            let member = self.joined.member_id.clone();
            let group = &self.config.group;
            self.joined = group::join(&mut self.coordinator, group, &topics, SESSION_TIMEOUT_MS, &member).await?;
            let assignments =
                if self.joined.leader { round_robin(self.every.clone(), &self.joined.members) } else { Vec::new() };
            match group::sync(&mut self.coordinator, group, &self.joined, &assignments).await? {
                Ok(mine) => {
                    tracing::info!(group = %group, generation = self.joined.generation, partitions = ?mine,
                        "kafka ingest: partitions assigned");
                    self.heartbeat = Instant::now();
                    self.positions = self.starting_positions(&mine).await?;
                    return Ok(());
                }
                Err(code) if group::UNKNOWN_MEMBER.contains(&code) => self.joined.member_id.clear(),
                Err(_) => {}
            }
        }
        Err(Failure::new(ErrorKind::Other, format!("group {} kept rebalancing", self.config.group)))
    }

    /// The committed offset of each partition, or the earliest in its log when the group committed none.
    async fn starting_positions(&mut self, mine: &[Partition]) -> Result<Vec<(Partition, i64)>, Failure> {
        let committed = group::committed(&mut self.coordinator, &self.config.group, mine).await?;
        let mut positions = Vec::new();
        for (partition, offset) in committed {
            let offset = match offset {
                Some(offset) => offset,
                None => {
                    let leader = self.leader_of(&partition)?;
                    let connection = self.connection(leader).await?;
                    let earliest = group::earliest(connection, std::slice::from_ref(&partition)).await?;
                    earliest.first().map_or(0, |(_, offset)| *offset)
                }
            };
            positions.push((partition, offset));
        }
        Ok(positions)
    }

    /// This member's partitions.
    pub fn partitions(&self) -> Vec<Partition> {
        self.positions.iter().map(|(p, _)| p.clone()).collect()
    }

    /// Fetches from every assigned partition, waiting up to `max_wait` for something new; says it is alive first
    /// when due. A rebalance is an error: the caller joins again.
    pub async fn poll(&mut self, max_wait: Duration) -> Result<Vec<Polled>, Failure> {
        if self.heartbeat.elapsed() >= HEARTBEAT_EVERY {
            match group::heartbeat(&mut self.coordinator, &self.config.group, &self.joined).await? {
                requests::NONE => self.heartbeat = Instant::now(),
                // Another member came or went: the partitions are dealt again (what this one read is committed).
                group::REBALANCE_IN_PROGRESS => self.rejoin().await?,
                code if group::UNKNOWN_MEMBER.contains(&code) => {
                    self.joined.member_id.clear();
                    self.rejoin().await?;
                }
                code => return Err(requests::failure(code, "a heartbeat")),
            }
        }
        let mut by_leader: HashMap<i32, Vec<(Partition, i64)>> = HashMap::new();
        for (partition, position) in &self.positions {
            by_leader.entry(self.leader_of(partition)?).or_default().push((partition.clone(), *position));
        }
        let wait_ms = i32::try_from(max_wait.as_millis()).unwrap_or(i32::MAX);
        let mut polled = Vec::new();
        for (leader, positions) in by_leader {
            let connection = self.connection(leader).await?;
            for fetched in group::fetch(connection, &positions, wait_ms, FETCH_MAX_BYTES).await? {
                let from = positions.iter().find(|(p, _)| *p == fetched.partition).map_or(0, |(_, o)| *o);
                let (decoded, next) = decode(&fetched.records, from, MAX_RECORDS);
                let lag = (fetched.high_watermark - next).max(0);
                polled.push(Polled { partition: fetched.partition, from, decoded, next, lag });
            }
        }
        Ok(polled)
    }

    /// Commits `offsets` (per partition, the offset after the last record stored) and reads on from there.
    pub async fn commit(&mut self, offsets: &[(Partition, i64)]) -> Result<(), Failure> {
        if offsets.is_empty() {
            return Ok(());
        }
        group::commit(&mut self.coordinator, &self.config.group, &self.joined, offsets).await?;
        for (partition, offset) in offsets {
            if let Some((_, position)) = self.positions.iter_mut().find(|(p, _)| p == partition) {
                *position = *offset;
            }
        }
        Ok(())
    }

    /// Leaves the group, so the others take its partitions now.
    pub async fn leave(mut self) {
        let member = self.joined.member_id.clone();
        let _ =
            tokio::time::timeout(self.config.timeout, group::leave(&mut self.coordinator, &self.config.group, &member))
                .await;
    }

    fn leader_of(&self, partition: &Partition) -> Result<i32, Failure> {
        self.leaders
            .get(partition)
            .copied()
            .filter(|l| *l >= 0)
            .ok_or_else(|| Failure::new(ErrorKind::Other, format!("{}/{} has no leader now", partition.0, partition.1)))
    }

    async fn connection(&mut self, leader: i32) -> Result<&mut Connection, Failure> {
        if !self.connections.contains_key(&leader) {
            let (host, port) = self.brokers.get(&leader).cloned().ok_or_else(|| {
                Failure::new(ErrorKind::Other, format!("the cluster names no address for broker {leader}"))
            })?;
            let connection = connect(&self.config, &self.policy, &host, port).await?;
            self.connections.insert(leader, connection);
        }
        Ok(self.connections.get_mut(&leader).expect("inserted above"))
    }
}

/// Every partition dealt to the members in turn, both sorted, so every leader would deal the same.
fn round_robin(mut partitions: Vec<Partition>, members: &[String]) -> Vec<(String, Vec<Partition>)> {
    let mut members = members.to_vec();
    members.sort();
    partitions.sort();
    let mut dealt: Vec<(String, Vec<Partition>)> = members.into_iter().map(|m| (m, Vec::new())).collect();
    if dealt.is_empty() {
        return dealt;
    }
    let count = dealt.len();
    for (i, partition) in partitions.into_iter().enumerate() {
        dealt[i % count].1.push(partition);
    }
    dealt
}

async fn connect(config: &ConsumerConfig, policy: &TargetPolicy, host: &str, port: u16) -> Result<Connection, Failure> {
    let mut connection = Connection::new(open(host, port, config.tls, policy, config.timeout).await?);
    if let Some(sasl) = &config.sasl {
        tokio::time::timeout(config.timeout, requests::authenticate(&mut connection, sasl))
            .await
            .map_err(|_| Failure::new(ErrorKind::Timeout, "SASL authentication took too long"))??;
    }
    Ok(connection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deals_every_partition_once() {
        let partitions: Vec<Partition> = (0..5).map(|i| ("t".to_owned(), i)).collect();
        let dealt = round_robin(partitions, &["b".to_owned(), "a".to_owned()]);
        assert_eq!(dealt[0].0, "a");
        assert_eq!(dealt[0].1.len() + dealt[1].1.len(), 5);
        assert_eq!(dealt[1].1, vec![("t".to_owned(), 1), ("t".to_owned(), 3)]);
    }
}

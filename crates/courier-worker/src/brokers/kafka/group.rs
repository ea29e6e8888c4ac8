//! The requests of a consumer in a group, each at a non-flexible version Kafka 4 and Tansu still answer:
//! `FindCoordinator` v1, `JoinGroup` v2, `SyncGroup` v1, `Heartbeat` v1, `LeaveGroup` v1, `OffsetFetch` v1,
//! `OffsetCommit` v2, `ListOffsets` v1 and `Fetch` v4; and the consumer protocol's subscription and assignment.

use super::super::connect::Failure;
use super::requests::{NONE, failure};
use super::wire::{Connection, Reader, Request, malformed};

const FETCH: i16 = 1;
const LIST_OFFSETS: i16 = 2;
const OFFSET_COMMIT: i16 = 8;
const OFFSET_FETCH: i16 = 9;
const FIND_COORDINATOR: i16 = 10;
const JOIN_GROUP: i16 = 11;
const HEARTBEAT: i16 = 12;
const LEAVE_GROUP: i16 = 13;
const SYNC_GROUP: i16 = 14;

/// Kafka 2.2+ asks a new member to join again with the id it assigned.
const MEMBER_ID_REQUIRED: i16 = 79;
/// The group is rebalancing: join again, as the same member.
pub const REBALANCE_IN_PROGRESS: i16 = 27;
/// The group no longer knows this member or its generation: join again, as a new member.
pub const UNKNOWN_MEMBER: [i16; 2] = [22, 25];

/// A topic and partition.
pub type Partition = (String, i32);

/// The coordinator of `group`: its host and port.
pub async fn find_coordinator(connection: &mut Connection, group: &str) -> Result<(String, u16), Failure> {
    let mut request = Request::new(FIND_COORDINATOR, 1);
    request.string(group).i8(0);
    let body = connection.call(request).await?;
    let mut reader = Reader::new(&body);
    reader.i32()?; // throttle time
    let code = reader.i16()?;
    reader.string()?; // error message
    if code != NONE {
        return Err(failure(code, &format!("the coordinator of group {group}")));
    }
    reader.i32()?; // node id
    let host = reader.string()?;
    let port = u16::try_from(reader.i32()?).map_err(|_| malformed("a coordinator port out of range"))?;
    Ok((host, port))
}

/// What `JoinGroup` answered: this member's id and generation, and, for the leader, every member's subscription.
#[derive(Debug)]
pub struct Joined {
    pub member_id: String,
    pub generation: i32,
    pub leader: bool,
    pub members: Vec<String>,
}

/// Joins `group` subscribed to `topics` (one protocol, `roundrobin`) as `member_id` (empty for a new member);
/// waits for the group to form.
pub async fn join(
    connection: &mut Connection,
    group: &str,
    topics: &[&str],
    session_timeout_ms: i32,
    member_id: &str,
) -> Result<Joined, Failure> {
    let mut subscription = Request::bare();
    subscription.i16(0).array(topics.len());
    for topic in topics {
        subscription.string(topic);
    }
    subscription.i32(-1); // user data
    let subscription = subscription.into_bytes();
    let mut member_id = member_id.to_owned();
    for _ in 0..2 {
        let mut request = Request::new(JOIN_GROUP, 2);
        request.string(group).i32(session_timeout_ms).i32(session_timeout_ms).string(&member_id).string("consumer");
        request.array(1).string("roundrobin").bytes(&subscription);
        let body = connection.call(request).await?;
        let mut reader = Reader::new(&body);
        reader.i32()?; // throttle time
        let code = reader.i16()?;
        let generation = reader.i32()?;
        reader.string()?; // protocol
        let leader = reader.string()?;
        member_id = reader.string()?;
        if code == MEMBER_ID_REQUIRED {
            continue;
        }
        if code != NONE {
            return Err(failure(code, &format!("joining group {group}")));
        }
        let mut members = Vec::new();
        for _ in 0..reader.array()? {
            members.push(reader.string()?);
            reader.bytes()?; // their subscription: every Courier subscribes to the same topics
        }
        return Ok(Joined { leader: leader == member_id, member_id, generation, members });
    }
    Err(malformed("a join that kept asking for a member id"))
}

/// Sends the leader's assignment (empty for a follower) and returns this member's partitions; or the error code
/// that says to join again ([`REBALANCE_IN_PROGRESS`], or one of [`UNKNOWN_MEMBER`]: as a new member).
pub async fn sync(
    connection: &mut Connection,
    group: &str,
    joined: &Joined,
    assignments: &[(String, Vec<Partition>)],
) -> Result<Result<Vec<Partition>, i16>, Failure> {
    let mut request = Request::new(SYNC_GROUP, 1);
    request.string(group).i32(joined.generation).string(&joined.member_id).array(assignments.len());
    for (member, partitions) in assignments {
        request.string(member).bytes(&assignment(partitions));
    }
    let body = connection.call(request).await?;
    let mut reader = Reader::new(&body);
    reader.i32()?; // throttle time
    let code = reader.i16()?;
    if code == REBALANCE_IN_PROGRESS || UNKNOWN_MEMBER.contains(&code) {
        return Ok(Err(code));
    }
    if code != NONE {
        return Err(failure(code, &format!("syncing group {group}")));
    }
    let assigned = reader.bytes()?;
    if assigned.is_empty() {
        return Ok(Ok(Vec::new()));
    }
    let mut reader = Reader::new(assigned);
    reader.i16()?; // version
    let mut partitions = Vec::new();
    for _ in 0..reader.array()? {
        let topic = reader.string()?;
        for _ in 0..reader.array()? {
            partitions.push((topic.clone(), reader.i32()?));
        }
    }
    Ok(Ok(partitions))
}

/// The consumer protocol's assignment of `partitions`.
fn assignment(partitions: &[Partition]) -> Vec<u8> {
    let topics = grouped(partitions);
    let mut bytes = Request::bare();
    bytes.i16(0).array(topics.len());
    for (topic, indexes) in &topics {
        bytes.string(topic).array(indexes.len());
        for index in indexes {
            bytes.i32(*index);
        }
    }
    bytes.i32(-1);
    bytes.into_bytes()
}

/// `Heartbeat`: the error code (0, [`REBALANCE_IN_PROGRESS`] or one of [`UNKNOWN_MEMBER`]: join again).
pub async fn heartbeat(connection: &mut Connection, group: &str, joined: &Joined) -> Result<i16, Failure> {
    let mut request = Request::new(HEARTBEAT, 1);
    request.string(group).i32(joined.generation).string(&joined.member_id);
    let body = connection.call(request).await?;
    let mut reader = Reader::new(&body);
    reader.i32()?; // throttle time
    reader.i16()
}

/// `LeaveGroup`, so the others take this member's partitions at once rather than after its session times out.
pub async fn leave(connection: &mut Connection, group: &str, member_id: &str) -> Result<(), Failure> {
    let mut request = Request::new(LEAVE_GROUP, 1);
    request.string(group).string(member_id);
    connection.call(request).await.map(drop)
}

/// The committed offset of each of `partitions` (`None` where the group committed none).
pub async fn committed(
    connection: &mut Connection,
    group: &str,
    partitions: &[Partition],
) -> Result<Vec<(Partition, Option<i64>)>, Failure> {
    let by_topic = grouped(partitions);
    let mut request = Request::new(OFFSET_FETCH, 1);
    request.string(group).array(by_topic.len());
    for (topic, indexes) in &by_topic {
        request.string(topic).array(indexes.len());
        for index in indexes {
            request.i32(*index);
        }
    }
    let body = connection.call(request).await?;
    let mut reader = Reader::new(&body);
    let mut offsets = Vec::new();
    for _ in 0..reader.array()? {
        let topic = reader.string()?;
        for _ in 0..reader.array()? {
            let index = reader.i32()?;
            let offset = reader.i64()?;
            reader.string()?; // metadata
            let code = reader.i16()?;
            if code != NONE {
                return Err(failure(code, &format!("the committed offset of {topic}/{index}")));
            }
            offsets.push(((topic.clone(), index), (offset >= 0).then_some(offset)));
        }
    }
    Ok(offsets)
}

/// Commits `offsets` (the next offset to read, per partition) for this member's generation.
pub async fn commit(
    connection: &mut Connection,
    group: &str,
    joined: &Joined,
    offsets: &[(Partition, i64)],
) -> Result<(), Failure> {
    let mut request = Request::new(OFFSET_COMMIT, 2);
    request.string(group).i32(joined.generation).string(&joined.member_id).i64(-1).array(offsets.len());
    for ((topic, index), offset) in offsets {
        // One topic per entry: Kafka accepts a topic repeated.
        request.string(topic).array(1).i32(*index).i64(*offset).null_string();
    }
    let body = connection.call(request).await?;
    let mut reader = Reader::new(&body);
    for _ in 0..reader.array()? {
        let topic = reader.string()?;
        for _ in 0..reader.array()? {
            let index = reader.i32()?;
            let code = reader.i16()?;
            if code != NONE {
                return Err(failure(code, &format!("committing the offset of {topic}/{index}")));
            }
        }
    }
    Ok(())
}

/// The earliest offset still in each of `partitions`, where a group with no commit starts.
pub async fn earliest(connection: &mut Connection, partitions: &[Partition]) -> Result<Vec<(Partition, i64)>, Failure> {
    let by_topic = grouped(partitions);
    let mut request = Request::new(LIST_OFFSETS, 1);
    request.i32(-1).array(by_topic.len());
    for (topic, indexes) in &by_topic {
        request.string(topic).array(indexes.len());
        for index in indexes {
            request.i32(*index).i64(-2);
        }
    }
    let body = connection.call(request).await?;
    let mut reader = Reader::new(&body);
    let mut offsets = Vec::new();
    for _ in 0..reader.array()? {
        let topic = reader.string()?;
        for _ in 0..reader.array()? {
            let index = reader.i32()?;
            let code = reader.i16()?;
            reader.i64()?; // timestamp
            let offset = reader.i64()?;
            if code != NONE {
                return Err(failure(code, &format!("the earliest offset of {topic}/{index}")));
            }
            offsets.push(((topic.clone(), index), offset));
        }
    }
    Ok(offsets)
}

/// One partition's fetched bytes: its record batches and how far the log goes.
#[derive(Debug)]
pub struct Fetched {
    pub partition: Partition,
    pub high_watermark: i64,
    pub records: Vec<u8>,
}

/// `Fetch` of `partitions` from their positions, waiting up to `max_wait_ms` for something new.
pub async fn fetch(
    connection: &mut Connection,
    positions: &[(Partition, i64)],
    max_wait_ms: i32,
    max_bytes: i32,
) -> Result<Vec<Fetched>, Failure> {
    let mut request = Request::new(FETCH, 4);
    request.i32(-1).i32(max_wait_ms).i32(1).i32(max_bytes).i8(1).array(positions.len());
    // Each partition a share of the whole, so no broker answers more than `max_bytes` whatever limit it honours.
    let share = (max_bytes / i32::try_from(positions.len()).unwrap_or(i32::MAX).max(1)).max(64 * 1024);
    for ((topic, index), offset) in positions {
        request.string(topic).array(1).i32(*index).i64(*offset).i32(share);
    }
    let body = connection.call(request).await?;
    let mut reader = Reader::new(&body);
    reader.i32()?; // throttle time
    let mut fetched = Vec::new();
    for _ in 0..reader.array()? {
        let topic = reader.string()?;
        for _ in 0..reader.array()? {
            let index = reader.i32()?;
            let code = reader.i16()?;
            let high_watermark = reader.i64()?;
            reader.i64()?; // last stable offset
            for _ in 0..reader.array()? {
                reader.i64()?; // an aborted transaction's producer
                reader.i64()?; // and first offset
            }
            let records = reader.bytes()?.to_vec();
            if code != NONE {
                return Err(failure(code, &format!("fetching {topic}/{index}")));
            }
            fetched.push(Fetched { partition: (topic.clone(), index), high_watermark, records });
        }
    }
    Ok(fetched)
}

/// `partitions` by topic, in the order topics first appear.
fn grouped(partitions: &[Partition]) -> Vec<(&str, Vec<i32>)> {
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for (topic, index) in partitions {
        match topics.iter_mut().find(|(t, _)| t == topic) {
            Some((_, indexes)) => indexes.push(*index),
            None => topics.push((topic, vec![*index])),
        }
    }
    topics
}

//! A record batch (magic 2) holding one record, as an idempotent producer writes it, and the partitioner Kafka's
//! own clients use for a keyed record (murmur2 of the key), so a call's events land where any Kafka client
//! would put them.

/// CRC-32C (Castagnoli), which a batch's checksum is.
const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// What a batch's producer fields carry: who wrote it and its place in that producer's sequence for the partition.
#[derive(Debug, Clone, Copy)]
pub struct Producer {
    pub id: i64,
    pub epoch: i16,
    pub sequence: i32,
}

/// One record to write.
pub struct Record<'a> {
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: &'a [(String, String)],
    pub timestamp_ms: i64,
}

/// The batch's bytes, from its base offset to its last record.
pub fn batch(record: &Record<'_>, producer: Producer) -> Vec<u8> {
    let mut body = Vec::with_capacity(record.value.len() + 256);
    body.extend_from_slice(&0i16.to_be_bytes()); // attributes: no compression, not transactional
    body.extend_from_slice(&0i32.to_be_bytes()); // last offset delta: one record
    body.extend_from_slice(&record.timestamp_ms.to_be_bytes()); // base timestamp
    body.extend_from_slice(&record.timestamp_ms.to_be_bytes()); // max timestamp
    body.extend_from_slice(&producer.id.to_be_bytes());
    body.extend_from_slice(&producer.epoch.to_be_bytes());
    body.extend_from_slice(&producer.sequence.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes()); // records
    let encoded = encode_record(record);
    varint(&mut body, encoded.len() as i64);
    body.extend_from_slice(&encoded);

    let crc = CASTAGNOLI.checksum(&body);
    let mut batch = Vec::with_capacity(body.len() + 21);
    batch.extend_from_slice(&0i64.to_be_bytes()); // base offset: the broker assigns it
    batch.extend_from_slice(&((body.len() + 9) as i32).to_be_bytes()); // the length after this field
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&crc.to_be_bytes());
    batch.extend_from_slice(&body);
    batch
}

fn encode_record(record: &Record<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.value.len() + 128);
    out.push(0); // attributes
    varint(&mut out, 0); // timestamp delta
    varint(&mut out, 0); // offset delta
    match record.key {
        Some(key) => {
            varint(&mut out, key.len() as i64);
            out.extend_from_slice(key);
        }
        None => varint(&mut out, -1),
    }
    varint(&mut out, record.value.len() as i64);
    out.extend_from_slice(record.value);
    varint(&mut out, record.headers.len() as i64);
    for (name, value) in record.headers {
        varint(&mut out, name.len() as i64);
        out.extend_from_slice(name.as_bytes());
        varint(&mut out, value.len() as i64);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// A zigzag varint, as records encode their lengths.
fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// The partition Kafka's default partitioner picks for `key` among `partitions`.
pub fn partition_for(key: &[u8], partitions: usize) -> usize {
    (murmur2(key) & 0x7fff_ffff) as usize % partitions.max(1)
}

/// Kafka's `Utils.murmur2`.
fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().expect("four bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() == 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// A record read back from a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// What a fetch's bytes hold, in offset order: records, and offsets that cannot be read as records (a compressed
/// batch, a bad checksum), which the reader sets aside rather than stall on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Record(Read),
    Unreadable { first: i64, last: i64, why: &'static str },
}

/// The records at or after offset `from` in a fetch's record batches, whole batches until `max_records` are read,
/// and the offset after the last batch read (`from` when there is none). The next position is thus always a batch's
/// end: a broker that answers a fetch from inside a batch with the batches after it (Tansu does) would otherwise
/// skip the batch's rest. A batch cut short at the end (a fetch stops at its byte limit) is left for the next
/// fetch; control batches (transaction markers) are skipped.
pub fn decode(bytes: &[u8], from: i64, max_records: usize) -> (Vec<Decoded>, i64) {
    let (mut out, mut next) = (Vec::new(), from);
    let mut rest = bytes;
    while rest.len() >= 12 && out.len() < max_records {
        let base = i64::from_be_bytes(rest[..8].try_into().expect("eight bytes"));
        let length = i32::from_be_bytes(rest[8..12].try_into().expect("four bytes"));
        let Ok(length) = usize::try_from(length) else { break };
        if length < 49 || rest.len() < 12 + length {
            break;
        }
        let (batch, after) = rest.split_at(12 + length);
        rest = after;
        let last = base + i64::from(i32::from_be_bytes(batch[23..27].try_into().expect("four bytes")));
        if last < from {
            continue;
        }
        next = next.max(last + 1);
        let attributes = i16::from_be_bytes(batch[21..23].try_into().expect("two bytes"));
        let crc = u32::from_be_bytes(batch[17..21].try_into().expect("four bytes"));
        let unreadable = |why| Decoded::Unreadable { first: base.max(from), last, why };
        if batch[16] != 2 {
            out.push(unreadable("a record batch of an old format (magic 0 or 1)"));
        } else if crc != CASTAGNOLI.checksum(&batch[21..]) {
            out.push(unreadable("a record batch whose checksum does not match"));
        } else if attributes & 0x20 != 0 {
            // A transaction marker: no records.
        } else if attributes & 0x07 != 0 {
            out.push(unreadable("a compressed record batch (produce without compression)"));
        } else {
            match records(&batch[57..], base, from) {
                Some(read) => out.extend(read.into_iter().map(Decoded::Record)),
                None => out.push(unreadable("a record batch that does not parse")),
            }
        }
    }
    (out, next)
}

/// The records of an uncompressed batch, from its record count on; `None` when they do not parse.
fn records(mut bytes: &[u8], base: i64, from: i64) -> Option<Vec<Read>> {
    let count = bytes.get(..4).map(|b| i32::from_be_bytes(b.try_into().expect("four bytes")))?;
    bytes = &bytes[4..];
    let mut read = Vec::new();
    for _ in 0..count.max(0) {
        let length = usize::try_from(take_varint(&mut bytes)?).ok()?;
        let mut record = bytes.get(..length)?;
        bytes = &bytes[length..];
        record = record.get(1..)?; // attributes
        take_varint(&mut record)?; // timestamp delta
        let offset = base + take_varint(&mut record)?;
        let key = take_bytes(&mut record)?;
        let value = take_bytes(&mut record)?;
        let mut headers = Vec::new();
        for _ in 0..take_varint(&mut record)?.max(0) {
            let name = take_bytes(&mut record)?.unwrap_or_default();
            let value = take_bytes(&mut record)?.unwrap_or_default();
            headers.push((String::from_utf8_lossy(&name).into_owned(), value));
        }
        if offset >= from {
            read.push(Read { offset, key, value, headers });
        }
    }
    Some(read)
}

/// A zigzag varint, at most ten bytes.
fn take_varint(bytes: &mut &[u8]) -> Option<i64> {
    let mut z = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        z |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Some((z >> 1) as i64 ^ -((z & 1) as i64));
        }
    }
    None
}

/// A varint length and that many bytes (-1: null).
fn take_bytes(bytes: &mut &[u8]) -> Option<Option<Vec<u8>>> {
    let length = take_varint(bytes)?;
    if length < 0 {
        return Some(None);
    }
    let length = usize::try_from(length).ok()?;
    let taken = bytes.get(..length)?.to_vec();
    *bytes = &bytes[length..];
    Some(Some(taken))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's own `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ];
        for (key, hash) in cases {
            assert_eq!(murmur2(key), hash, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn varints_are_zigzag() {
        let encode = |v| {
            let mut out = Vec::new();
            varint(&mut out, v);
            out
        };
        assert_eq!(encode(0), [0]);
        assert_eq!(encode(-1), [1]);
        assert_eq!(encode(1), [2]);
        assert_eq!(encode(300), [0xd8, 0x04]);
    }

    #[test]
    fn what_is_written_reads_back_and_a_damaged_batch_is_set_aside() {
        let headers = [("courier-tenant".to_owned(), "ten_1".to_owned())];
        let record = Record { key: Some(b"call_1"), value: b"{\"id\":1}", headers: &headers, timestamp_ms: 5 };
        let mut bytes = batch(&record, Producer { id: -1, epoch: -1, sequence: -1 });
        bytes[..8].copy_from_slice(&41i64.to_be_bytes());
        let read = Read {
            offset: 41,
            key: Some(b"call_1".to_vec()),
            value: Some(b"{\"id\":1}".to_vec()),
            headers: vec![("courier-tenant".to_owned(), b"ten_1".to_vec())],
        };
        assert_eq!(decode(&bytes, 0, 10), (vec![Decoded::Record(read)], 42));
        assert_eq!(decode(&bytes, 42, 10), (vec![], 42), "before the position");
        let twice = [bytes.clone(), bytes.clone()].concat();
        assert_eq!(decode(&twice, 0, 1).1, 42, "whole batches up to the limit");
        assert_eq!(decode(&bytes[..bytes.len() - 1], 0, 10), (vec![], 0), "cut short: left for the next fetch");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(decode(&bytes, 0, 10).0[..], [Decoded::Unreadable { first: 41, last: 41, .. }]));
        for v in [0, -1, 1, 300, -300, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            varint(&mut out, v);
            assert_eq!(take_varint(&mut out.as_slice()), Some(v));
        }
    }

    #[test]
    fn a_batch_checksums_what_follows_its_checksum() {
        let headers = [("webhook-id".to_owned(), "dlv_1".to_owned())];
        let record = Record { key: Some(b"call_1"), value: b"{}", headers: &headers, timestamp_ms: 1 };
        let bytes = batch(&record, Producer { id: 7, epoch: 0, sequence: 3 });
        assert_eq!(i32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize, bytes.len() - 12);
        assert_eq!(bytes[16], 2);
        let crc = u32::from_be_bytes(bytes[17..21].try_into().unwrap());
        assert_eq!(crc, CASTAGNOLI.checksum(&bytes[21..]));
        assert_eq!(CASTAGNOLI.checksum(b"123456789"), 0xe306_9283);
    }
}

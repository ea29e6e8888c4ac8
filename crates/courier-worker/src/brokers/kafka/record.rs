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

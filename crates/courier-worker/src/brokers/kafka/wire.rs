//! The Kafka protocol's framing and primitive types, for the few non-flexible request versions the producer uses:
//! a request is built into one buffer and sent whole; a response is read whole, at most [`MAX_RESPONSE`] bytes,
//! and parsed with bounds (a broker's address is tenant input, so what answers there may be hostile).

use courier_core::ErrorKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::super::connect::{Failure, Stream};

/// The largest response read: a cluster's metadata for one topic, or a produce answer, is far smaller.
const MAX_RESPONSE: usize = 4 * 1024 * 1024;
/// The most elements an array in a response may claim.
const MAX_ITEMS: usize = 100_000;

/// The client id every request carries.
const CLIENT_ID: &str = "courier";

/// One request: header v1 (api key, version, correlation id, client id) and the body its methods append.
pub struct Request {
    buf: Vec<u8>,
}

impl Request {
    pub fn new(api_key: i16, version: i16) -> Self {
        let mut request = Self { buf: vec![0; 4] };
        request.i16(api_key).i16(version).i32(0).string(CLIENT_ID);
        request
    }

    /// A buffer of the protocol's types without a header: the consumer protocol's subscription and assignment,
    /// which travel as bytes inside a request.
    pub fn bare() -> Self {
        Self { buf: Vec::new() }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// A request of a flexible version: header v2, whose tagged fields (none) follow the client id.
    pub fn flexible(api_key: i16, version: i16) -> Self {
        let mut request = Self::new(api_key, version);
        request.no_tagged_fields();
        request
    }

    /// An empty set of tagged fields, which ends every structure of a flexible version.
    pub fn no_tagged_fields(&mut self) -> &mut Self {
        self.buf.push(0);
        self
    }

    /// A flexible version's null string.
    pub fn compact_null_string(&mut self) -> &mut Self {
        self.buf.push(0);
        self
    }

    pub fn i8(&mut self, v: i8) -> &mut Self {
        self.buf.push(v as u8);
        self
    }

    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn string(&mut self, v: &str) -> &mut Self {
        self.i16(v.len() as i16);
        self.buf.extend_from_slice(v.as_bytes());
        self
    }

    pub fn null_string(&mut self) -> &mut Self {
        self.i16(-1)
    }

    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.i32(v.len() as i32);
        self.buf.extend_from_slice(v);
        self
    }

    /// An array's length; its elements follow.
    pub fn array(&mut self, len: usize) -> &mut Self {
        self.i32(len as i32)
    }

    /// The frame: its length first, and the correlation id that answers it.
    fn frame(mut self, correlation: i32) -> Vec<u8> {
        let len = (self.buf.len() - 4) as i32;
        self.buf[..4].copy_from_slice(&len.to_be_bytes());
        self.buf[8..12].copy_from_slice(&correlation.to_be_bytes());
        self.buf
    }
}

/// A response body, read with bounds: every read past its end or over a limit is a [`Failure`].
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Failure> {
        if self.buf.len() < n {
            return Err(malformed("a response shorter than its fields"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub fn i8(&mut self) -> Result<i8, Failure> {
        Ok(self.take(1)?[0] as i8)
    }

    pub fn i16(&mut self) -> Result<i16, Failure> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("two bytes")))
    }

    pub fn i32(&mut self) -> Result<i32, Failure> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("four bytes")))
    }

    pub fn i64(&mut self) -> Result<i64, Failure> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("eight bytes")))
    }

    /// An unsigned varint, as flexible versions write lengths and tags.
    fn unsigned_varint(&mut self) -> Result<u32, Failure> {
        let mut value = 0u32;
        for shift in (0..35).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("a varint longer than five bytes"))
    }

    /// Skips a structure's tagged fields (a flexible version's extensions; the producer reads none of them).
    pub fn tagged_fields(&mut self) -> Result<(), Failure> {
        for _ in 0..self.unsigned_varint()? {
            self.unsigned_varint()?; // tag
            let size = self.unsigned_varint()? as usize;
            self.take(size)?;
        }
        Ok(())
    }

    /// A nullable string (null reads as empty), lossily decoded.
    pub fn string(&mut self) -> Result<String, Failure> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(String::new());
        }
        Ok(String::from_utf8_lossy(self.take(len as usize)?).into_owned())
    }

    /// Nullable bytes (null reads as empty).
    pub fn bytes(&mut self) -> Result<&'a [u8], Failure> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(&[]);
        }
        self.take(len as usize)
    }

    /// An array's length (null is empty), at most [`MAX_ITEMS`] and no more than the bytes left could hold.
    pub fn array(&mut self) -> Result<usize, Failure> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(0);
        }
        let len = len as usize;
        if len > MAX_ITEMS || len > self.buf.len() {
            return Err(malformed("an array longer than its response"));
        }
        Ok(len)
    }
}

/// A connection to one broker: requests answered in order, each matched by its correlation id.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    correlation: i32,
}

impl Connection {
    pub fn new(stream: Stream) -> Self {
        Self { stream, correlation: 0 }
    }

    /// Sends `request` and reads its response's body (after the correlation id). Cancel-safe only in the sense
    /// that a cancelled call leaves the connection unusable: the caller drops it.
    pub async fn call(&mut self, request: Request) -> Result<Vec<u8>, Failure> {
        self.correlation = self.correlation.wrapping_add(1);
        let frame = request.frame(self.correlation);
        self.stream.write_all(&frame).await.map_err(|e| Failure::io("writing to kafka", &e))?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await.map_err(|e| Failure::io("reading from kafka", &e))?;
        let len = i32::from_be_bytes(len);
        if len < 4 || len as usize > MAX_RESPONSE {
            return Err(malformed("a response of an impossible size"));
        }
        let mut body = vec![0; len as usize];
        self.stream.read_exact(&mut body).await.map_err(|e| Failure::io("reading from kafka", &e))?;
        if i32::from_be_bytes(body[..4].try_into().expect("four bytes")) != self.correlation {
            return Err(malformed("a response to another request"));
        }
        body.drain(..4);
        Ok(body)
    }
}

pub fn malformed(what: &str) -> Failure {
    Failure::new(ErrorKind::Other, format!("kafka answered {what}"))
}

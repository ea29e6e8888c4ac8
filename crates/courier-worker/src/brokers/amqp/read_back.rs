//! Reading back what was published: a queue bound to an exchange and `basic.get`, for the tests (and anyone
//! checking a destination by hand). Only what Courier writes is read: long-string headers and the properties
//! `properties` sets.

use courier_core::ErrorKind;

use super::{CHANNEL, Connection, Failure, METHOD, ids, long_bytes, method, short};

impl Connection {
    /// Declares a durable queue and binds it to `exchange` with `key` (the tests read what was published with it).
    pub async fn declare_bound_queue(&mut self, queue: &str, exchange: &str, key: &str) -> Result<(), Failure> {
        let mut declare = method(50, 10);
        declare.extend_from_slice(&0u16.to_be_bytes());
        short(&mut declare, queue.as_bytes())?;
        declare.push(0b10); // durable
        long_bytes(&mut declare, &[]);
        self.send(METHOD, CHANNEL, &declare).await?;
        self.expect(CHANNEL, (50, 11), "queue.declare-ok").await?;
        let mut bind = method(50, 20);
        bind.extend_from_slice(&0u16.to_be_bytes());
        for name in [queue, exchange, key] {
            short(&mut bind, name.as_bytes())?;
        }
        bind.push(0);
        long_bytes(&mut bind, &[]);
        self.send(METHOD, CHANNEL, &bind).await?;
        self.expect(CHANNEL, (50, 21), "queue.bind-ok").await?;
        Ok(())
    }

    /// Takes the next message of `queue` (`basic.get`, acknowledged at once), when there is one.
    pub async fn get(&mut self, queue: &str) -> Result<Option<Got>, Failure> {
        let mut get = method(60, 70);
        get.extend_from_slice(&0u16.to_be_bytes());
        short(&mut get, queue.as_bytes())?;
        get.push(1); // no-ack
        self.send(METHOD, CHANNEL, &get).await?;
        let (kind, _, payload) = self.frame().await?;
        match (kind, ids(&payload)) {
            (METHOD, (60, 72)) => return Ok(None),
            (METHOD, (60, 71)) => {}
            _ => return Err(self.closed(&payload)),
        }
        let mut args = Reader(&payload[4..]);
        let (_tag, _redelivered, _exchange) = (args.u64()?, args.u8()?, args.short()?);
        let routing_key = args.short()?;
        let (_, _, header) = self.frame().await?;
        let mut got = read_properties(&header)?;
        got.routing_key = routing_key;
        while got.body.len() < got.size {
            let (_, _, chunk) = self.frame().await?;
            got.body.extend_from_slice(&chunk);
        }
        Ok(Some(got))
    }
}

/// A message read back with [`Connection::get`].
#[derive(Debug, Default)]
pub struct Got {
    pub routing_key: String,
    pub content_type: String,
    /// Its headers; only long-string values are read (Courier sends no other).
    pub headers: Vec<(String, String)>,
    pub delivery_mode: u8,
    pub message_id: String,
    pub kind: String,
    pub body: Vec<u8>,
    size: usize,
}

/// Reads a content header's properties (the ones [`properties`] writes; any other makes it an error).
fn read_properties(header: &[u8]) -> Result<Got, Failure> {
    let mut r = Reader(header);
    let (_class, _weight) = (r.u16()?, r.u16()?);
    let size = usize::try_from(r.u64()?).map_err(|_| bad())?;
    let flags = r.u16()?;
    let mut got = Got { size, ..Got::default() };
    for bit in (2..16).rev() {
        if flags & (1 << bit) == 0 {
            continue;
        }
        match bit {
            15 => got.content_type = r.short()?,
            13 => {
                let len = r.u32()? as usize;
                let mut table = Reader(r.take(len)?);
                while !table.0.is_empty() {
                    let name = table.short()?;
                    if table.u8()? != b'S' {
                        return Err(bad());
                    }
                    let len = table.u32()? as usize;
                    let value = table.take(len)?;
                    got.headers.push((name, String::from_utf8_lossy(value).into_owned()));
                }
            }
            12 => got.delivery_mode = r.u8()?,
            7 => got.message_id = r.short()?,
            5 => got.kind = r.short()?,
            3 => drop(r.short()?),
            _ => return Err(bad()),
        }
    }
    Ok(got)
}

fn bad() -> Failure {
    Failure::new(ErrorKind::Other, "rabbitmq sent a content header Courier does not read")
}

/// Big-endian fields off the front of a frame.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Failure> {
        if self.0.len() < n {
            return Err(bad());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Failure> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Failure> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().map_err(|_| bad())?))
    }
    fn u32(&mut self) -> Result<u32, Failure> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| bad())?))
    }
    fn u64(&mut self) -> Result<u64, Failure> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().map_err(|_| bad())?))
    }
    fn short(&mut self) -> Result<String, Failure> {
        let len = self.u8()? as usize;
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Publish, properties};
    use super::*;

    #[test]
    fn properties_read_back_as_written() {
        let headers = [("X-Webhook-Signature".to_owned(), "t=1,v1=abc".to_owned())];
        let publish = Publish {
            exchange: "amq.topic",
            routing_key: "call.completed",
            message_id: "dlv_1",
            kind: "call.completed",
            headers: &headers,
        };
        let got = read_properties(&properties(&publish, 42).expect("properties")).expect("read back");
        assert_eq!((got.size, got.delivery_mode, got.message_id.as_str()), (42, 2, "dlv_1"));
        assert_eq!((got.content_type.as_str(), got.kind.as_str()), ("application/json", "call.completed"));
        assert_eq!(got.headers, headers);
    }
}

//! A RabbitMQ connection speaking just what a delivery needs of AMQP 0-9-1: the handshake (PLAIN credentials,
//! no heartbeats), one channel in confirm mode, and `basic.publish` (persistent, mandatory) answered by the
//! broker's `basic.ack`. A message no queue is bound to comes back (`basic.return`) and is refused, as is an
//! exchange that does not exist (the broker closes the channel with 404). Frames are read with a size bound: a
//! broker's address is tenant input.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use courier_core::ErrorKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

use super::connect::{Failure, Stream, address, open};
use super::redis::decode;
use crate::ssrf::TargetPolicy;

mod read_back;
pub use read_back::Got;

const METHOD: u8 = 1;
const HEADER: u8 = 2;
const BODY: u8 = 3;
const HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
/// The largest frame read; RabbitMQ's own default is 128 KiB.
const MAX_FRAME: u32 = 1024 * 1024;
/// The frame size this client asks for: a body larger than this goes in several frames.
const FRAME_MAX: u32 = 128 * 1024;
/// The channel every publish goes on.
const CHANNEL: u16 = 1;

/// What one publish carries besides its body.
#[derive(Debug)]
pub struct Publish<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub message_id: &'a str,
    /// The event type (AMQP's `type` property).
    pub kind: &'a str,
    pub headers: &'a [(String, String)],
}

#[derive(Debug)]
pub struct Connection {
    stream: BufReader<Stream>,
    frame_max: u32,
    /// The delivery tag of the next publish (confirm mode numbers them from 1).
    next_tag: u64,
    broken: bool,
}

impl Connection {
    /// Connects to `amqp://[user:password@]host[:port][/vhost]` (guest/guest and `/` when absent) and opens a
    /// channel in confirm mode.
    pub async fn open(url: &str, policy: &TargetPolicy, timeout: Duration) -> Result<Self, Failure> {
        let url = reqwest::Url::parse(url).map_err(|e| Failure::new(ErrorKind::InvalidUrl, e.to_string()))?;
        let tls = url.scheme() == "amqps";
        let (host, port) = address(&url, if tls { 5671 } else { 5672 })?;
        let stream = open(&host, port, tls, policy, timeout).await?;
        let mut connection = Self { stream: BufReader::new(stream), frame_max: FRAME_MAX, next_tag: 1, broken: false };
        let (user, password) = match (url.username(), url.password()) {
            ("", None) => (b"guest".to_vec(), b"guest".to_vec()),
            (user, password) => (decode(user), password.map(decode).unwrap_or_default()),
        };
        let vhost = match url.path() {
            "" | "/" => b"/".to_vec(),
            path => decode(&path[1..]),
        };
        connection.handshake(&user, &password, &vhost).await?;
        Ok(connection)
    }

    async fn handshake(&mut self, user: &[u8], password: &[u8], vhost: &[u8]) -> Result<(), Failure> {
        self.write(b"AMQP\x00\x00\x09\x01").await?;
        self.expect(0, (10, 10), "connection.start").await?;
        let mut start_ok = method(10, 11);
        let mut properties = Vec::new();
        table_string(&mut properties, b"product", b"Courier");
        table_string(&mut properties, b"version", env!("CARGO_PKG_VERSION").as_bytes());
        // Asks for a connection.close (403) on a wrong password, rather than a bare disconnect some time later.
        let mut capabilities = Vec::new();
        capabilities.extend_from_slice(b"\x1cauthentication_failure_closet\x01");
        properties.extend_from_slice(b"\x0ccapabilitiesF");
        long_bytes(&mut properties, &capabilities);
        long_bytes(&mut start_ok, &properties);
        short(&mut start_ok, b"PLAIN")?;
        let response = [&[0u8][..], user, &[0u8], password].concat();
        long_bytes(&mut start_ok, &response);
        short(&mut start_ok, b"en_US")?;
        self.send(METHOD, 0, &start_ok).await?;
        // A wrong password is answered by connection.close (403): `expect` turns it into a refusal.
        let tune = self.expect(0, (10, 30), "connection.tune").await?;
        let server_max = tune.get(2..6).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        self.frame_max = if server_max == 0 { FRAME_MAX } else { server_max.min(FRAME_MAX) };
        let mut tune_ok = method(10, 31);
        tune_ok.extend_from_slice(&1u16.to_be_bytes());
        tune_ok.extend_from_slice(&self.frame_max.to_be_bytes());
        tune_ok.extend_from_slice(&0u16.to_be_bytes());
        self.send(METHOD, 0, &tune_ok).await?;
        let mut open = method(10, 40);
        short(&mut open, vhost)?;
        short(&mut open, b"")?;
        open.push(0);
        self.send(METHOD, 0, &open).await?;
        self.expect(0, (10, 41), "connection.open-ok").await?;
        let mut channel = method(20, 10);
        short(&mut channel, b"")?;
        self.send(METHOD, CHANNEL, &channel).await?;
        self.expect(CHANNEL, (20, 11), "channel.open-ok").await?;
        let mut select = method(85, 10);
        select.push(0);
        self.send(METHOD, CHANNEL, &select).await?;
        self.expect(CHANNEL, (85, 11), "confirm.select-ok").await?;
        Ok(())
    }

    /// Whether the connection may serve another publish.
    pub fn reusable(&self) -> bool {
        !self.broken
    }

    /// Publishes `body` persistent and mandatory; the broker's confirmation (`basic.ack`), as a short JSON text.
    pub async fn publish(
        &mut self,
        publish: &Publish<'_>,
        body: &[u8],
        written: &AtomicBool,
    ) -> Result<Vec<u8>, Failure> {
        let mut frame = method(60, 40);
        frame.extend_from_slice(&0u16.to_be_bytes());
        short(&mut frame, publish.exchange.as_bytes())?;
        short(&mut frame, publish.routing_key.as_bytes())?;
        frame.push(0b01); // mandatory: a message no queue takes comes back
        self.send(METHOD, CHANNEL, &frame).await?;
        self.send(HEADER, CHANNEL, &properties(publish, body.len())?).await?;
        for chunk in body.chunks((self.frame_max - 8) as usize) {
            self.send(BODY, CHANNEL, chunk).await?;
        }
        let tag = self.next_tag;
        self.next_tag += 1;
        written.store(true, Ordering::Relaxed);
        let mut returned: Option<String> = None;
        loop {
            let (kind, channel, payload) = self.frame().await?;
            if kind != METHOD {
                continue; // heartbeats, a returned message's header and body
            }
            match ids(&payload) {
                (60, 50) if channel == CHANNEL => returned = Some(reply_text(&payload[4..])),
                (60, 80) | (60, 120) if channel == CHANNEL => {
                    let acked = payload.get(4..12).map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])));
                    if acked.is_none_or(|acked| acked < tag) && payload.get(12).is_none_or(|multiple| multiple & 1 == 0)
                    {
                        continue; // an earlier publish's confirmation
                    }
                    if ids(&payload) == (60, 120) {
                        return Err(Failure::new(
                            ErrorKind::NotConfirmed,
                            "the broker could not take the message (basic.nack)",
                        ));
                    }
                    if let Some(why) = returned {
                        return Err(Failure::new(ErrorKind::Refused, format!("no queue took the message: {why}")));
                    }
                    return Ok(format!(r#"{{"confirmed": true, "delivery_tag": {tag}}}"#).into_bytes());
                }
                _ => return Err(self.closed(&payload)),
            }
        }
    }

    /// The method `expected` on `channel`, its arguments; a close from the broker is a refusal.
    async fn expect(&mut self, channel: u16, expected: (u16, u16), what: &str) -> Result<Vec<u8>, Failure> {
        loop {
            let (kind, on, payload) = self.frame().await?;
            if kind == HEARTBEAT {
                continue;
            }
            if kind == METHOD && on == channel && ids(&payload) == expected {
                return Ok(payload[4..].to_vec());
            }
            if kind == METHOD && matches!(ids(&payload), (10, 50) | (20, 40)) {
                return Err(self.closed(&payload));
            }
            self.broken = true;
            return Err(Failure::new(ErrorKind::Other, format!("rabbitmq answered something else than {what}")));
        }
    }

    /// A `connection.close` or `channel.close` (or anything unexpected) as the failure it stands for; the
    /// connection is not used again.
    fn closed(&mut self, payload: &[u8]) -> Failure {
        self.broken = true;
        match ids(payload) {
            (10, 50) | (20, 40) => {
                Failure::new(ErrorKind::Refused, format!("rabbitmq refused: {}", reply_text(&payload[4..])))
            }
            _ => Failure::new(ErrorKind::Other, "rabbitmq answered an unexpected method"),
        }
    }

    async fn send(&mut self, kind: u8, channel: u16, payload: &[u8]) -> Result<(), Failure> {
        let mut frame = Vec::with_capacity(payload.len() + 8);
        frame.push(kind);
        frame.extend_from_slice(&channel.to_be_bytes());
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        frame.push(FRAME_END);
        self.write(&frame).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let written = self.stream.get_mut().write_all(bytes).await;
        written.map_err(|e| self.failed(Failure::io("writing to rabbitmq", &e)))
    }

    /// One frame: its type, channel and payload.
    async fn frame(&mut self) -> Result<(u8, u16, Vec<u8>), Failure> {
        let mut head = [0u8; 7];
        if let Err(e) = self.stream.read_exact(&mut head).await {
            return Err(self.failed(Failure::io("reading from rabbitmq", &e)));
        }
        if &head[..4] == b"AMQP" {
            return Err(self.failed(Failure::new(ErrorKind::Refused, "rabbitmq does not speak AMQP 0-9-1 here")));
        }
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]);
        if size > MAX_FRAME {
            return Err(self.failed(Failure::new(ErrorKind::Other, "rabbitmq sent a frame too large")));
        }
        let mut payload = vec![0u8; size as usize + 1];
        if let Err(e) = self.stream.read_exact(&mut payload).await {
            return Err(self.failed(Failure::io("reading from rabbitmq", &e)));
        }
        if payload.pop() != Some(FRAME_END) {
            return Err(self.failed(Failure::new(ErrorKind::Other, "rabbitmq sent a malformed frame")));
        }
        if head[0] == METHOD && payload.len() < 4 {
            return Err(self.failed(Failure::new(ErrorKind::Other, "rabbitmq sent a method frame too short")));
        }
        Ok((head[0], u16::from_be_bytes([head[1], head[2]]), payload))
    }

    fn failed(&mut self, failure: Failure) -> Failure {
        self.broken = true;
        failure
    }
}

/// A method frame's payload so far: its class and method ids.
fn method(class: u16, method: u16) -> Vec<u8> {
    [class.to_be_bytes(), method.to_be_bytes()].concat()
}

fn ids(payload: &[u8]) -> (u16, u16) {
    match payload {
        [a, b, c, d, ..] => (u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d])),
        _ => (0, 0),
    }
}

/// A close's or return's `reply-code reply-text` as text.
fn reply_text(args: &[u8]) -> String {
    let code = args.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let len = args.get(2).copied().unwrap_or(0) as usize;
    let text = args.get(3..3 + len).map(String::from_utf8_lossy).unwrap_or_default();
    format!("{code} {text}")
}

/// A short string (at most 255 bytes).
fn short(out: &mut Vec<u8>, text: &[u8]) -> Result<(), Failure> {
    let len =
        u8::try_from(text.len()).map_err(|_| Failure::new(ErrorKind::InvalidUrl, "a name longer than 255 bytes"))?;
    out.push(len);
    out.extend_from_slice(text);
    Ok(())
}

fn long_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// One `name: long string` entry of a field table.
fn table_string(table: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    table.push(name.len().min(255) as u8);
    table.extend_from_slice(&name[..name.len().min(255)]);
    table.push(b'S');
    long_bytes(table, value);
}

/// The content header: body size and the properties (content type, headers, persistent, message id, type).
fn properties(publish: &Publish<'_>, body_len: usize) -> Result<Vec<u8>, Failure> {
    let mut header = Vec::new();
    header.extend_from_slice(&60u16.to_be_bytes());
    header.extend_from_slice(&0u16.to_be_bytes());
    header.extend_from_slice(&(body_len as u64).to_be_bytes());
    // content-type (bit 15), headers (13), delivery-mode (12), message-id (7), type (5), app-id (3)
    let flags: u16 = (1 << 15) | (1 << 13) | (1 << 12) | (1 << 7) | (1 << 5) | (1 << 3);
    header.extend_from_slice(&flags.to_be_bytes());
    short(&mut header, b"application/json")?;
    let mut table = Vec::new();
    for (name, value) in publish.headers {
        table_string(&mut table, name.as_bytes(), value.as_bytes());
    }
    long_bytes(&mut header, &table);
    header.push(2); // persistent
    short(&mut header, publish.message_id.as_bytes())?;
    short(&mut header, publish.kind.as_bytes())?;
    short(&mut header, b"courier")?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_name_their_method_and_reply() {
        assert_eq!(ids(&method(60, 40)), (60, 40));
        let mut close = method(20, 40);
        close.extend_from_slice(&404u16.to_be_bytes());
        short(&mut close, b"NOT_FOUND - no exchange 'x'").expect("short");
        assert_eq!(reply_text(&close[4..]), "404 NOT_FOUND - no exchange 'x'");
        assert!(short(&mut Vec::new(), &[b'a'; 256]).is_err(), "a short string holds at most 255 bytes");
    }
}

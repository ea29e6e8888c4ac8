//! A NATS connection speaking just what a delivery needs: `CONNECT` (user and password or token, headers and
//! no-responders on), one inbox subscription, and `HPUB` with a reply subject, answered by JetStream's
//! acknowledgement. [`Connection::request`] sends anything else and waits for its answer (the tests create and read
//! streams with it). Lines and messages are read with bounds: a broker's address is tenant input.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use courier_core::ErrorKind;
use courier_core::destination::NatsCredentials;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::connect::{Failure, Stream, address, dial, secure};
use super::redis::decode;
use crate::ssrf::TargetPolicy;

/// The longest protocol line read (INFO is the longest a server sends).
const MAX_LINE: usize = 64 * 1024;
/// The largest message read back (an acknowledgement is tiny; a stream message read in a test is an envelope).
const MAX_MESSAGE: usize = 8 * 1024 * 1024;

#[derive(Debug)]
pub struct Connection {
    stream: BufReader<Stream>,
    /// This connection's reply subjects are `<inbox>.<n>`.
    inbox: String,
    next: u64,
    /// Set when the server sent `-ERR` or the connection failed: it must not go back to the pool.
    broken: bool,
}

/// A message that arrived on the inbox.
struct Answer {
    /// The status of a header block's first line (`NATS/1.0 503` is "no responders").
    status: Option<u16>,
    payload: Vec<u8>,
}

impl Connection {
    /// Connects to `nats://[user:password@ | token@]host[:port]` (`tls://` for TLS); `credentials`, when given, win
    /// over the URL's.
    pub async fn open(
        url: &str,
        credentials: Option<&NatsCredentials>,
        policy: &TargetPolicy,
        timeout: Duration,
    ) -> Result<Self, Failure> {
        let url = reqwest::Url::parse(url).map_err(|e| Failure::new(ErrorKind::InvalidUrl, e.to_string()))?;
        let (host, port) = address(&url, 4222)?;
        let stream = Stream::Plain(dial(&host, port, policy, timeout).await?);
        let inbox = format!("_INBOX.courier.{}", uuid_like());
        let mut connection = Self { stream: BufReader::new(stream), inbox, next: 0, broken: false };
        let info = connection.line().await?;
        let info: serde_json::Value = info
            .strip_prefix("INFO ")
            .and_then(|json| serde_json::from_str(json).ok())
            .ok_or_else(|| malformed("a greeting that is not INFO"))?;
        // As NATS's own clients do: the server's INFO comes in the clear, then TLS when the URL (`tls://`) or the
        // server asks for it. A `tls://` URL never falls back to plain text.
        let tls = url.scheme() == "tls" || info["tls_required"].as_bool() == Some(true);
        if tls {
            let Stream::Plain(tcp) = connection.stream.into_inner() else {
                return Err(Failure::new(ErrorKind::Other, "TLS asked for twice"));
            };
            connection.stream = BufReader::new(secure(tcp, &host, timeout).await?);
        }
        let mut connect = serde_json::json!({
            "verbose": false, "pedantic": false, "tls_required": tls, "name": "courier", "lang": "rust",
            "version": env!("CARGO_PKG_VERSION"), "protocol": 1, "headers": true, "no_responders": true,
        });
        let text = |part: &str| String::from_utf8_lossy(&decode(part)).into_owned();
        let (user, password) = (text(url.username()), url.password().map(text));
        match (credentials, password) {
            (Some(c), _) => {
                for (field, value) in [("user", &c.username), ("pass", &c.password), ("auth_token", &c.token)] {
                    if let Some(value) = value {
                        connect[field] = value.clone().into();
                    }
                }
            }
            (None, Some(password)) => {
                connect["user"] = user.into();
                connect["pass"] = password.into();
            }
            (None, None) if !user.is_empty() => connect["auth_token"] = user.into(),
            (None, None) => {}
        }
        // PING last: its PONG comes after the server handled the subscription, so a refused SUB is seen here.
        let hello = format!("CONNECT {connect}\r\nSUB {}.* 1\r\nPING\r\n", connection.inbox);
        connection.write(hello.as_bytes()).await?;
        loop {
            let line = connection.line().await?;
            match line.split_once(' ').map_or(line.as_str(), |(verb, _)| verb) {
                "PONG" => return Ok(connection),
                "+OK" | "INFO" => {}
                "PING" => connection.write(b"PONG\r\n").await?,
                "-ERR" => return Err(Failure::new(ErrorKind::Refused, format!("the server refused: {line}"))),
                _ => return Err(malformed("an unexpected line while connecting")),
            }
        }
    }

    /// Whether the connection may serve another publish: nothing failed on it and the server sent no `-ERR`.
    pub fn reusable(&self) -> bool {
        !self.broken
    }

    /// Publishes `body` with `headers` to `subject` and waits for JetStream's acknowledgement (its JSON).
    pub async fn publish(
        &mut self,
        subject: &str,
        headers: &[(String, String)],
        body: &[u8],
        written: &AtomicBool,
    ) -> Result<Vec<u8>, Failure> {
        let mut block = String::from("NATS/1.0\r\n");
        for (name, value) in headers {
            block.push_str(&format!("{name}: {value}\r\n"));
        }
        block.push_str("\r\n");
        let reply = self.reply_subject();
        let mut frame = format!("HPUB {subject} {reply} {} {}\r\n{block}", block.len(), block.len() + body.len());
        let mut frame = std::mem::take(&mut frame).into_bytes();
        frame.extend_from_slice(body);
        frame.extend_from_slice(b"\r\n");
        self.write(&frame).await?;
        written.store(true, Ordering::Relaxed);
        let answer = self.answer(&reply).await?;
        if answer.status == Some(503) {
            let message = format!("no JetStream stream stores subject {subject} (no responders)");
            return Err(Failure::new(ErrorKind::Refused, message));
        }
        let ack: serde_json::Value = serde_json::from_slice(&answer.payload)
            .map_err(|_| Failure::new(ErrorKind::NotConfirmed, "the answer is not a JetStream acknowledgement"))?;
        if let Some(error) = ack.get("error") {
            let message = format!("JetStream refused the message: {error}");
            return Err(Failure::new(ErrorKind::Refused, message));
        }
        if ack.get("stream").is_none() {
            return Err(Failure::new(ErrorKind::NotConfirmed, "the answer is not a JetStream acknowledgement"));
        }
        Ok(answer.payload)
    }

    /// Sends `payload` to `subject` and returns the first answer (a JetStream API call, say).
    pub async fn request(&mut self, subject: &str, payload: &[u8]) -> Result<Vec<u8>, Failure> {
        let reply = self.reply_subject();
        let mut frame = format!("PUB {subject} {reply} {}\r\n", payload.len()).into_bytes();
        frame.extend_from_slice(payload);
        frame.extend_from_slice(b"\r\n");
        self.write(&frame).await?;
        let answer = self.answer(&reply).await?;
        if answer.status == Some(503) {
            return Err(Failure::new(ErrorKind::Refused, format!("no responders on {subject}")));
        }
        Ok(answer.payload)
    }

    fn reply_subject(&mut self) -> String {
        self.next += 1;
        format!("{}.{}", self.inbox, self.next)
    }

    /// Reads until the message addressed to `reply` arrives, answering pings and skipping answers to earlier
    /// requests (one that timed out on this connection before it went back to the pool).
    async fn answer(&mut self, reply: &str) -> Result<Answer, Failure> {
        loop {
            let line = self.line().await?;
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["PING"] => self.write(b"PONG\r\n").await?,
                ["PONG"] | ["+OK"] => {}
                ["INFO", ..] => {}
                ["-ERR", ..] => {
                    self.broken = true;
                    return Err(Failure::new(ErrorKind::Refused, format!("the server refused: {line}")));
                }
                ["MSG", subject, _sid, .., size] => {
                    let payload = self.payload(size).await?;
                    if *subject == reply {
                        return Ok(Answer { status: None, payload });
                    }
                }
                ["HMSG", subject, _sid, .., header_size, size] => {
                    let mut message = self.payload(size).await?;
                    let header_size: usize =
                        header_size.parse().map_err(|_| self.failed(malformed("a header size")))?;
                    if header_size > message.len() {
                        return Err(self.failed(malformed("a header block longer than its message")));
                    }
                    if *subject == reply {
                        let payload = message.split_off(header_size);
                        return Ok(Answer { status: status_of(&message), payload });
                    }
                }
                _ => return Err(self.failed(malformed("an unexpected line"))),
            }
        }
    }

    /// A message's `size` bytes and the CRLF after them.
    async fn payload(&mut self, size: &str) -> Result<Vec<u8>, Failure> {
        let size: usize = size.parse().ok().filter(|n| *n <= MAX_MESSAGE).ok_or_else(|| malformed("a message size"))?;
        let mut payload = vec![0; size + 2];
        let read = self.stream.read_exact(&mut payload).await;
        read.map_err(|e| self.failed(Failure::io("reading from nats", &e)))?;
        if !payload.ends_with(b"\r\n") {
            return Err(self.failed(malformed("a message without its CRLF")));
        }
        payload.truncate(size);
        Ok(payload)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let written = self.stream.get_mut().write_all(bytes).await;
        written.map_err(|e| self.failed(Failure::io("writing to nats", &e)))
    }

    /// Marks the connection unusable and passes `failure` on.
    fn failed(&mut self, failure: Failure) -> Failure {
        self.broken = true;
        failure
    }

    /// One CRLF-terminated line, at most [`MAX_LINE`] bytes, without its CRLF.
    async fn line(&mut self) -> Result<String, Failure> {
        let mut line = Vec::new();
        let read = (&mut self.stream).take(MAX_LINE as u64).read_until(b'\n', &mut line).await;
        read.map_err(|e| self.failed(Failure::io("reading from nats", &e)))?;
        if line.is_empty() {
            return Err(self.failed(Failure::new(ErrorKind::Connect, "nats closed the connection")));
        }
        if !line.ends_with(b"\r\n") {
            return Err(self.failed(malformed("a line too long or unterminated")));
        }
        line.truncate(line.len() - 2);
        String::from_utf8(line).map_err(|_| malformed("a line that is not UTF-8"))
    }
}

/// The status of a header block (`NATS/1.0 503\r\n…`), when its first line carries one.
fn status_of(block: &[u8]) -> Option<u16> {
    let first = block.split(|b| *b == b'\r').next()?;
    std::str::from_utf8(first).ok()?.strip_prefix("NATS/1.0 ")?.get(..3)?.parse().ok()
}

fn malformed(what: &str) -> Failure {
    Failure::new(ErrorKind::Other, format!("nats answered {what}"))
}

/// A token no other connection's inbox has: a fresh id's random and time bits.
fn uuid_like() -> String {
    courier_core::DeliveryId::generate().as_str().trim_start_matches("dlv_").to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::status_of;

    #[test]
    fn reads_the_status_of_a_header_block() {
        assert_eq!(status_of(b"NATS/1.0 503\r\n\r\n"), Some(503));
        assert_eq!(status_of(b"NATS/1.0\r\nNats-Msg-Id: x\r\n\r\n"), None);
    }
}

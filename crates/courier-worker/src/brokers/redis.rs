//! A Redis connection speaking just what a delivery needs (RESP2: `AUTH`, `SELECT`, `XADD`), plus
//! [`Connection::command`] for anything else (the tests read streams back with it). Replies are read with bounds,
//! since a broker's address is tenant input and what answers there may be hostile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use courier_core::ErrorKind;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::connect::{Failure, Stream, address, open};
use crate::ssrf::TargetPolicy;

/// The largest bulk reply read (a stream entry read back in a test is far smaller).
const MAX_BULK: usize = 16 * 1024 * 1024;
/// The longest status or error line read.
const MAX_LINE: usize = 64 * 1024;
/// The most elements of an array reply, and how deep arrays may nest.
const MAX_ITEMS: usize = 100_000;
const MAX_DEPTH: usize = 8;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

#[derive(Debug)]
pub struct Connection {
    stream: BufReader<Stream>,
}

impl Connection {
    /// Connects to `redis://[user:password@]host[:port][/db]` (`rediss://` for TLS), authenticates and selects the
    /// database.
    pub async fn open(url: &str, policy: &TargetPolicy, timeout: Duration) -> Result<Self, Failure> {
        let url = reqwest::Url::parse(url).map_err(|e| Failure::new(ErrorKind::InvalidUrl, e.to_string()))?;
        let (host, port) = address(&url, 6379)?;
        let stream = open(&host, port, url.scheme() == "rediss", policy, timeout).await?;
        let mut connection = Self { stream: BufReader::new(stream) };
        if let Some(password) = url.password() {
            let (password, user) = (decode(password), decode(url.username()));
            let auth: Vec<&[u8]> =
                if user.is_empty() { vec![b"AUTH", &password] } else { vec![b"AUTH", &user, &password] };
            connection.expect_ok(&auth, "AUTH").await?;
        }
        let db = url.path().trim_start_matches('/');
        if !db.is_empty() && db != "0" {
            connection.expect_ok(&[b"SELECT", db.as_bytes()], "SELECT").await?;
        }
        Ok(connection)
    }

    async fn expect_ok(&mut self, args: &[&[u8]], what: &str) -> Result<(), Failure> {
        match self.command(args).await? {
            Reply::Status(_) => Ok(()),
            Reply::Error(e) => Err(Failure::new(ErrorKind::Refused, format!("{what} refused: {e}"))),
            other => Err(Failure::new(ErrorKind::Other, format!("{what} answered {other:?}"))),
        }
    }

    /// `XADD stream [MAXLEN ~ n] * field value …`; the new entry's id.
    pub async fn xadd(
        &mut self,
        stream: &str,
        maxlen: Option<u64>,
        fields: &[(&str, &[u8])],
        written: &AtomicBool,
    ) -> Result<Vec<u8>, Failure> {
        let maxlen = maxlen.map(|n| n.to_string());
        let mut args: Vec<&[u8]> = vec![b"XADD", stream.as_bytes()];
        if let Some(n) = &maxlen {
            args.extend([b"MAXLEN".as_slice(), b"~", n.as_bytes()]);
        }
        args.push(b"*");
        for (name, value) in fields {
            args.extend([name.as_bytes(), *value]);
        }
        self.send(&args).await?;
        written.store(true, Ordering::Relaxed);
        match self.read().await? {
            Reply::Bulk(Some(id)) => Ok(id),
            Reply::Error(e) => Err(Failure::new(ErrorKind::Refused, format!("XADD refused: {e}"))),
            other => Err(Failure::new(ErrorKind::Other, format!("XADD answered {other:?}"))),
        }
    }

    /// Any command; an error reply is a [`Reply::Error`], not a failure.
    pub async fn command(&mut self, args: &[&[u8]]) -> Result<Reply, Failure> {
        self.send(args).await?;
        self.read().await
    }

    async fn send(&mut self, args: &[&[u8]]) -> Result<(), Failure> {
        let mut frame = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            frame.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            frame.extend_from_slice(arg);
            frame.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&frame).await.map_err(|e| Failure::io("writing to redis", &e))
    }

    async fn read(&mut self) -> Result<Reply, Failure> {
        self.read_at(0).await
    }

    /// One reply; arrays recurse, at most [`MAX_DEPTH`] deep.
    fn read_at(&mut self, depth: usize) -> std::pin::Pin<Box<dyn Future<Output = Result<Reply, Failure>> + Send + '_>> {
        Box::pin(async move {
            let line = self.line().await?;
            // The type is one ASCII byte; anything else (a multi-byte character included) is not RESP.
            let Some(kind) = line.bytes().next().filter(u8::is_ascii) else {
                return Err(malformed("a reply of an unknown type"));
            };
            let rest = &line[1..];
            match kind {
                b'+' => Ok(Reply::Status(rest.to_owned())),
                b'-' => Ok(Reply::Error(rest.to_owned())),
                b':' => rest.parse().map(Reply::Integer).map_err(|_| malformed("an integer reply")),
                b'$' => {
                    let Some(len) = length(rest, MAX_BULK)? else { return Ok(Reply::Bulk(None)) };
                    let mut bulk = vec![0; len + 2];
                    self.stream.read_exact(&mut bulk).await.map_err(|e| Failure::io("reading from redis", &e))?;
                    if !bulk.ends_with(b"\r\n") {
                        return Err(malformed("a bulk reply without its CRLF"));
                    }
                    bulk.truncate(len);
                    Ok(Reply::Bulk(Some(bulk)))
                }
                b'*' => {
                    let Some(len) = length(rest, MAX_ITEMS)? else { return Ok(Reply::Array(None)) };
                    if depth >= MAX_DEPTH {
                        return Err(malformed("arrays nested too deep"));
                    }
                    let mut items = Vec::with_capacity(len.min(1024));
                    for _ in 0..len {
                        items.push(self.read_at(depth + 1).await?);
                    }
                    Ok(Reply::Array(Some(items)))
                }
                _ => Err(malformed("a reply of an unknown type")),
            }
        })
    }

    /// One CRLF-terminated line, at most [`MAX_LINE`] bytes, without its CRLF.
    async fn line(&mut self) -> Result<String, Failure> {
        let mut line = Vec::new();
        let read = (&mut self.stream).take(MAX_LINE as u64).read_until(b'\n', &mut line).await;
        read.map_err(|e| Failure::io("reading from redis", &e))?;
        if line.is_empty() {
            return Err(Failure::new(ErrorKind::Connect, "redis closed the connection"));
        }
        if !line.ends_with(b"\r\n") || line.len() < 3 {
            return Err(malformed("a line too long or unterminated"));
        }
        line.truncate(line.len() - 2);
        String::from_utf8(line).map_err(|_| malformed("a line that is not UTF-8"))
    }
}

/// A `$`/`*` length: `None` for -1 (nil), at most `max`.
fn length(text: &str, max: usize) -> Result<Option<usize>, Failure> {
    match text.parse::<i64>() {
        Ok(-1) => Ok(None),
        Ok(n) if n >= 0 && (n as u64) <= max as u64 => Ok(Some(n as usize)),
        _ => Err(malformed("a length out of bounds")),
    }
}

fn malformed(what: &str) -> Failure {
    Failure::new(ErrorKind::Other, format!("redis answered {what}"))
}

/// A URL's user or password, percent-decoded to the bytes they stand for.
pub(super) fn decode(text: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(text).collect()
}

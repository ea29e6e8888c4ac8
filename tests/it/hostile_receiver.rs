//! A hostile receiver: a raw TCP server on 127.0.0.1 that answers every request in one of the ways a broken or
//! malicious endpoint does. Shared by the integration tests and the fault suite (`benches/chaos`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a hostile receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `500` with a NUL byte in a JSON body.
    NulBody,
    /// `500` with bytes that are not UTF-8.
    InvalidUtf8,
    /// `200` announcing and streaming 100 MB.
    HugeBody,
    /// `200` whose body arrives one byte a second.
    Trickle,
    /// Reads the request and never answers.
    Silent,
    /// Resets the connection (RST) after reading the request.
    Reset,
    /// Closes the connection without a word.
    Close,
    /// Answers bytes that are not HTTP.
    Garbage,
    /// `999`, a status no one defined.
    Status999,
    /// `302` to elsewhere (never followed).
    Redirect,
    /// `200` with a 300 KB header.
    HugeHeader,
    /// `200` with broken chunked encoding.
    BrokenChunked,
    /// `200` claiming `Content-Encoding: gzip` over plain bytes.
    FalseEncoding,
    /// `410 Gone`.
    Gone,
    /// `429` with `Retry-After: 1`.
    TooManyRequests,
    /// `200`, keeping the connection open without saying `Connection: close`, then resetting it when a second
    /// request arrives on it: a server whose keep-alive timeout ran out just as the client reused the connection
    /// (gunicorn's is 2 s), made certain. Not hostile, just common; not in `ALL`.
    OneAnswerPerConnection,
}

impl Mode {
    /// Every mode, for the fault suite.
    #[allow(dead_code)] // The integration tests name each mode; only `benches/chaos` iterates them.
    pub const ALL: [Mode; 15] = [
        Mode::NulBody,
        Mode::InvalidUtf8,
        Mode::HugeBody,
        Mode::Trickle,
        Mode::Silent,
        Mode::Reset,
        Mode::Close,
        Mode::Garbage,
        Mode::Status999,
        Mode::Redirect,
        Mode::HugeHeader,
        Mode::BrokenChunked,
        Mode::FalseEncoding,
        Mode::Gone,
        Mode::TooManyRequests,
    ];
}

/// A receiver that answers every request the same hostile way; counts the requests it read.
pub struct Hostile {
    pub url: String,
    requests: Arc<AtomicUsize>,
}

impl Hostile {
    pub async fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { return };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut socket = socket;
                    if read_request(&mut socket).await {
                        counter.fetch_add(1, Ordering::SeqCst);
                        if mode == Mode::OneAnswerPerConnection {
                            one_answer(socket).await;
                        } else {
                            answer(socket, mode).await;
                        }
                    }
                });
            }
        });
        Self { url: format!("http://{addr}/hook"), requests }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Reads one request's head and its `Content-Length` body; false if the peer went away first.
async fn read_request(socket: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let Ok(n) = socket.read(&mut chunk).await else { return false };
        if n == 0 {
            return false;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            return true;
        }
    }
}

/// Answers `200` as if the connection could be reused, then resets it when the next request starts arriving.
async fn one_answer(mut socket: TcpStream) {
    if socket.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await.is_err() {
        return;
    }
    let mut byte = [0u8; 1];
    if let Ok(1..) = socket.read(&mut byte).await {
        // A zero linger resets at once (RST), as a server does when it closes a socket with unread bytes.
        #[allow(deprecated)]
        let _ = socket.set_linger(Some(Duration::ZERO));
    }
}

// Long because it is one match arm per hostile mode, each a few lines of raw socket writes.
async fn answer(mut socket: TcpStream, mode: Mode) {
    let simple = |status: &str, headers: &str, body: &[u8]| {
        let mut out =
            format!("HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n", body.len())
                .into_bytes();
        out.extend_from_slice(body);
        out
    };
    let bytes = match mode {
        Mode::NulBody => simple("500 Internal Server Error", "", b"{\"x\":\"\0\"}"),
        Mode::InvalidUtf8 => simple("500 Internal Server Error", "", &[0xff, 0xfe, b'e', 0x00, b'r', 0xc3, 0x28]),
        Mode::Status999 => simple("999 Whatever", "", b"?"),
        Mode::Redirect => simple("302 Found", "Location: http://127.0.0.1:1/elsewhere\r\n", b""),
        Mode::Gone => simple("410 Gone", "", b"gone"),
        Mode::TooManyRequests => simple("429 Too Many Requests", "Retry-After: 1\r\n", b"slow down"),
        Mode::FalseEncoding => simple("200 OK", "Content-Encoding: gzip\r\n", b"this is not gzip"),
        Mode::HugeHeader => {
            let header = format!("X-Padding: {}\r\n", "a".repeat(300 * 1024));
            simple("200 OK", &header, b"ok")
        }
        Mode::Garbage => b"\0\xff\xfeNOT HTTP AT ALL\r\n\r\n\x01\x02".to_vec(),
        Mode::BrokenChunked => {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nnot a chunk\r\n".to_vec()
        }
        Mode::HugeBody => {
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\nConnection: close\r\n\r\n";
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let block = vec![b'x'; 64 * 1024];
            for _ in 0..(100 * 16) {
                if socket.write_all(&block).await.is_err() {
                    return; // The client stopped reading: as it should.
                }
            }
            return;
        }
        Mode::Trickle => {
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n";
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for _ in 0..100 {
                if socket.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            return;
        }
        Mode::Silent => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            return;
        }
        Mode::Reset => {
            // A zero linger resets at once, so the blocking drop the deprecation warns of cannot happen.
            #[allow(deprecated)]
            let _ = socket.set_linger(Some(Duration::ZERO));
            drop(socket);
            return;
        }
        Mode::Close => {
            let _ = socket.shutdown().await;
            return;
        }
        Mode::OneAnswerPerConnection => return one_answer(socket).await,
    };
    let _ = socket.write_all(&bytes).await;
    let _ = socket.shutdown().await;
}

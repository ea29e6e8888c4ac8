//! A broker's TCP connection, through the same SSRF guard as a webhook URL: every address the host resolves to
//! is vetted, and only vetted addresses are dialled.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use courier_core::ErrorKind;
use tokio::net::TcpStream;

use crate::ssrf::TargetPolicy;

/// Why a publish failed, as the attempt log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let mut message: String = message.into();
        if message.len() > 1024 {
            let mut end = 1024;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Self { kind, message }
    }

    /// A connection that broke under a request.
    pub fn io(what: &str, err: &std::io::Error) -> Self {
        Self::new(ErrorKind::Connect, format!("{what}: {err}"))
    }
}

/// The host and port of a broker URL (`default_port` when it names none).
pub fn address(url: &reqwest::Url, default_port: u16) -> Result<(String, u16), Failure> {
    let host = url.host_str().filter(|h| !h.is_empty());
    let host = host.ok_or_else(|| Failure::new(ErrorKind::InvalidUrl, "the broker URL has no host"))?;
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_owned(), url.port().unwrap_or(default_port)))
}

/// Connects to `host:port`, trying each address the guard lets through, within `timeout`.
pub async fn dial(host: &str, port: u16, policy: &TargetPolicy, timeout: Duration) -> Result<TcpStream, Failure> {
    let found: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(found)) => found.collect(),
            Ok(Err(err)) => return Err(Failure::new(ErrorKind::Dns, format!("looking up {host} failed: {err}"))),
            Err(_) => return Err(Failure::new(ErrorKind::Dns, format!("looking up {host} took too long"))),
        },
    };
    let vetted: Vec<SocketAddr> = found.into_iter().filter(|a| policy.permits(a.ip())).collect();
    if vetted.is_empty() {
        let message = format!("{host} resolves only to addresses that are not allowed as webhook targets");
        return Err(Failure::new(ErrorKind::BlockedTarget, message));
    }
    let mut last = Failure::new(ErrorKind::Connect, format!("cannot connect to {host}:{port}"));
    for address in vetted {
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(err)) => last = Failure::new(ErrorKind::Connect, format!("connecting to {address}: {err}")),
            Err(_) => last = Failure::new(ErrorKind::Timeout, format!("connecting to {address} took too long")),
        }
    }
    Err(last)
}

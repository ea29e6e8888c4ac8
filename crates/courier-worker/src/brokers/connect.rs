//! A broker's connection, through the same SSRF guard as a webhook URL: every address the host resolves to is
//! vetted, and only vetted addresses are dialled; then TLS, verified as an HTTPS delivery is, when the URL asks.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use courier_core::ErrorKind;
use rustls_platform_verifier::BuilderVerifierExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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

/// A broker connection: plain TCP, or TLS over it (`rediss://`, `amqps://`, NATS's `tls://` or a NATS server that
/// requires TLS). The protocols read and write it alike.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// The TLS settings every broker connection uses: the same platform verifier as an HTTPS delivery (the system's
/// roots, or `SSL_CERT_FILE`/`SSL_CERT_DIR` when set), built once.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, Failure> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    let built = CONFIG.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        rustls::ClientConfig::builder()
            .with_platform_verifier()
            .map(|builder| Arc::new(builder.with_no_client_auth()))
            .map_err(|e| format!("no TLS roots to verify brokers with: {e}"))
    });
    built.clone().map_err(|message| Failure::new(ErrorKind::Tls, message))
}

/// Wraps `tcp` in TLS to `host` (its certificate must name it), within `timeout`.
pub async fn secure(tcp: TcpStream, host: &str, timeout: Duration) -> Result<Stream, Failure> {
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| Failure::new(ErrorKind::Tls, format!("{host} cannot be checked against a certificate: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(tls_config()?);
    match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Ok(Ok(tls)) => Ok(Stream::Tls(Box::new(tls))),
        Ok(Err(err)) => Err(Failure::new(ErrorKind::Tls, format!("TLS with {host}: {err}"))),
        Err(_) => Err(Failure::new(ErrorKind::Timeout, format!("the TLS handshake with {host} took too long"))),
    }
}

/// [`dial`], then TLS when `tls` is set.
pub async fn open(
    host: &str,
    port: u16,
    tls: bool,
    policy: &TargetPolicy,
    timeout: Duration,
) -> Result<Stream, Failure> {
    let tcp = dial(host, port, policy, timeout).await?;
    if tls { secure(tcp, host, timeout).await } else { Ok(Stream::Plain(tcp)) }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

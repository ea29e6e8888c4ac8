//! One attempt as named stages: prepare (envelope and signatures) → send → classify.
//! A non-2xx answer is a value, not an error.

use std::error::Error as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use courier_core::signature::{sign_header, sign_standard};
use courier_core::{AttemptResult, Envelope, ErrorKind, ResponseBody, WebhookSecret};
use courier_scheduler::ClaimedDelivery;
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use tracing::field::Empty;

use crate::ssrf::{BlockedTarget, LookupFailed, TargetPolicy};

/// The exact request of one attempt.
#[derive(Debug)]
pub struct Prepared {
    pub body: Vec<u8>,
    /// The webhook's custom headers (values are credentials, so `Debug` hides them).
    pub headers: courier_core::Redacted<Vec<(String, String)>>,
    pub timestamp: i64,
    pub signature: String,
    pub standard_signature: String,
}

/// Builds the filtered envelope and signs it with every live secret (both header schemes).
#[tracing::instrument(level = "debug", skip_all)]
pub fn prepare(delivery: &ClaimedDelivery, secrets: &[WebhookSecret], now: DateTime<Utc>) -> Prepared {
    let body = Envelope {
        event: &delivery.event,
        filter: delivery.webhook.payload,
        delivery_id: &delivery.id,
        attempt: delivery.attempt,
        max_attempts: delivery.max_attempts,
    }
    .to_bytes();
    let timestamp = now.timestamp();
    let refs: Vec<&WebhookSecret> = secrets.iter().collect();
    Prepared {
        headers: courier_core::Redacted(Vec::new()),
        signature: sign_header(&refs, timestamp, &body),
        standard_signature: sign_standard(&refs, delivery.event.id.as_str(), timestamp, &body),
        body,
        timestamp,
    }
}

/// What came back, with what the attempt log keeps of it.
#[derive(Debug)]
pub struct Sent {
    pub result: AttemptResult,
    pub error_message: Option<String>,
    pub response_body: Option<ResponseBody>,
    pub duration: Duration,
}

/// Refuses IP-literal URLs the guard forbids: they never reach the resolver.
fn literal_target_blocked(url: &reqwest::Url, policy: &TargetPolicy) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<IpAddr>().is_ok_and(|ip| !policy.permits(ip))
}

/// POSTs the prepared request and reads at most [`ResponseBody::MAX_BYTES`] of the answer.
#[tracing::instrument(level = "debug", skip_all, fields(url.host = Empty))]
pub async fn send(
    clients: &crate::client::Clients,
    policy: &TargetPolicy,
    delivery: &ClaimedDelivery,
    mut prepared: Prepared,
) -> Sent {
    let started = Instant::now();
    let url = match reqwest::Url::parse(&delivery.webhook.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url,
        _ => return failed(ErrorKind::InvalidUrl, "the webhook URL cannot be requested".to_owned(), started),
    };
    tracing::Span::current().record("url.host", url.host_str());
    if literal_target_blocked(&url, policy) {
        return failed(ErrorKind::BlockedTarget, format!("{url} is not an allowed webhook target"), started);
    }
    let mut response = match post(clients, url, delivery, &mut prepared, started).await {
        Ok(response) => response,
        Err(err) => return failed(classify_error(&err), describe(&err), started),
    };
    let status = response.status().as_u16();
    let retry_after = response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
    let mut body = Vec::new();
    let mut more = false;
    // Read only what the log keeps; a receiver streaming megabytes costs neither memory nor time. The client's
    // total timeout also bounds a body trickled byte by byte.
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = ResponseBody::MAX_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if chunk.len() >= room {
                    // A full buffer: more follows unless the body is known to have ended exactly here.
                    more = chunk.len() > room || response.content_length() != Some(0);
                    break;
                }
            }
            Ok(None) => break,
            // The status already arrived; an unreadable body does not change the outcome.
            Err(_) => break,
        }
    }
    Sent {
        result: AttemptResult::Response { status, retry_after },
        error_message: None,
        response_body: (!body.is_empty()).then(|| ResponseBody::capture(body, more)),
        duration: started.elapsed(),
    }
}

/// Sends the request on a pooled connection; when that connection fails before any byte of an answer (its server
/// closed it as we sent: its keep-alive ran out), sends it again at once on a new connection, within the same
/// attempt and its time. Delivery is at least once; receivers deduplicate on the event id.
async fn post(
    clients: &crate::client::Clients,
    url: reqwest::Url,
    delivery: &ClaimedDelivery,
    prepared: &mut Prepared,
    started: Instant,
) -> Result<reqwest::Response, reqwest::Error> {
    // Shared, so sending again copies nothing.
    let body = bytes::Bytes::from(std::mem::take(&mut prepared.body));
    match build_request(&clients.pooled, url.clone(), delivery, prepared, body.clone()).send().await {
        Err(err) if closed_before_answer(&err) => {
            let left = delivery_time_left(clients, started);
            build_request(&clients.fresh, url, delivery, prepared, body).timeout(left).send().await
        }
        sent => sent,
    }
}

/// Whether a request failed on its connection before any byte of the answer arrived: the connection was reset,
/// aborted or closed under it. Not a refused or timed-out connect (a fresh connection would fare no better), and
/// never after a status line arrived.
fn closed_before_answer(err: &reqwest::Error) -> bool {
    use std::io::ErrorKind as Io;
    if err.is_connect() || err.is_timeout() || err.is_body() || err.is_decode() || err.is_status() {
        return false;
    }
    chain(err).any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(io.kind(), Io::ConnectionReset | Io::ConnectionAborted | Io::BrokenPipe | Io::UnexpectedEof)
        }) || e.to_string().contains("connection closed before message completed")
    })
}

/// What remains of the attempt's time (the client's total timeout), at least a millisecond.
fn delivery_time_left(clients: &crate::client::Clients, started: Instant) -> Duration {
    clients.timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1))
}

/// The POST of one attempt: the webhook's own headers, then ours and the signed body.
fn build_request(
    client: &reqwest::Client,
    url: reqwest::Url,
    delivery: &ClaimedDelivery,
    prepared: &Prepared,
    body: bytes::Bytes,
) -> reqwest::RequestBuilder {
    let mut request = client.post(url);
    // Ours cannot be among the webhook's own (courier_core::headers refuses those names).
    for (name, value) in &prepared.headers.0 {
        request = request.header(name, value);
    }
    for (name, value) in signature_headers(delivery, prepared) {
        request = request.header(name, value);
    }
    request.header(CONTENT_TYPE, HeaderValue::from_static("application/json")).body(body)
}

/// The headers that carry an attempt's signatures and names, in both schemes: an HTTP request's, and a broker
/// message's headers or fields.
pub fn signature_headers(delivery: &ClaimedDelivery, prepared: &Prepared) -> [(&'static str, String); 6] {
    [
        ("X-Webhook-Signature", prepared.signature.clone()),
        ("X-Webhook-Event", delivery.event.event_type.as_str().to_owned()),
        ("X-Webhook-Delivery", delivery.id.as_str().to_owned()),
        ("webhook-id", delivery.event.id.as_str().to_owned()),
        ("webhook-timestamp", prepared.timestamp.to_string()),
        ("webhook-signature", prepared.standard_signature.clone()),
    ]
}

/// Publishes the prepared message to a broker: the same body, with the signature headers and the webhook's own.
pub async fn publish(
    brokers: &crate::brokers::Brokers,
    broker: &courier_core::Broker,
    delivery: &ClaimedDelivery,
    prepared: Prepared,
) -> Sent {
    let mut headers: Vec<(String, String)> =
        signature_headers(delivery, &prepared).into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
    headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
    let own =
        prepared.headers.0.iter().filter(|(name, _)| !courier_core::destination::header_reserved_for_brokers(name));
    headers.extend(own.cloned());
    let message = crate::brokers::Message { body: &prepared.body, headers, delivery };
    brokers.publish(broker, &message).await
}

fn failed(kind: ErrorKind, message: String, started: Instant) -> Sent {
    Sent {
        result: AttemptResult::Error(kind),
        error_message: Some(message),
        response_body: None,
        duration: started.elapsed(),
    }
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

fn chain(err: &reqwest::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(err.source(), |&e| e.source())
}

/// Maps a transport failure to the kind the attempt log records.
pub fn classify_error(err: &reqwest::Error) -> ErrorKind {
    if chain(err).any(|e| e.is::<BlockedTarget>()) {
        return ErrorKind::BlockedTarget;
    }
    if err.is_timeout() {
        return ErrorKind::Timeout;
    }
    if chain(err).any(|e| e.is::<rustls::Error>()) {
        return ErrorKind::Tls;
    }
    // Our resolver is the only one the client has, so a DNS failure is always our `LookupFailed`.
    if chain(err).any(|e| e.is::<LookupFailed>()) {
        return ErrorKind::Dns;
    }
    if err.is_connect() {
        return ErrorKind::Connect;
    }
    if err.is_body() || err.is_decode() {
        return ErrorKind::Body;
    }
    if err.is_builder() {
        return ErrorKind::InvalidUrl;
    }
    ErrorKind::Other
}

/// The whole cause chain in one line, for the attempt log.
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    for cause in chain(err) {
        text.push_str(": ");
        text.push_str(&cause.to_string());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        let future = (Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let parsed = parse_retry_after(&future).expect("date parses");
        assert!(parsed > Duration::from_secs(80) && parsed <= Duration::from_secs(90), "{parsed:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }
}

//! Hostile receivers: a raw TCP server on 127.0.0.1 that answers each request in one of the ways a broken or
//! malicious endpoint does, and the suite that proves each ends as recorded attempts, quickly, beside a healthy
//! webhook whose deliveries are not held up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use courier_scheduler::DeliveryStatus;
use courier_scheduler::logs::{self, Visibility};
use courier_worker::WorkerConfig;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::pipeline::{Fixture, config};
use crate::receiver::{Receiver, Reply};

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
                        answer(socket, mode).await;
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
    };
    let _ = socket.write_all(&bytes).await;
    let _ = socket.shutdown().await;
}

/// The delivery timeout of this suite: every hostile mode must end within about this.
const TIMEOUT: Duration = Duration::from_millis(1500);

fn hostile_config() -> WorkerConfig {
    let base = config();
    WorkerConfig {
        // Room for a receiver's `Retry-After: 1` (the policy caps hints at its own cap).
        retry: courier_core::RetryPolicy { cap: Duration::from_secs(5), ..base.retry },
        timeout: TIMEOUT,
        connect_timeout: Duration::from_millis(500),
        lease: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(2),
        ..base
    }
}

/// One hostile webhook and one healthy one of the same tenant; three events; the worker loop as production runs it.
/// Every delivery must end, with exactly one recorded attempt per try; the healthy webhook's deliveries must succeed
/// promptly; and the worker must stop within its grace period.
async fn survives(pool: PgPool, mode: Mode) -> (Vec<logs::Attempt>, DeliveryStatus) {
    let f = Fixture::new(pool).await;
    let hostile = Hostile::start(mode).await;
    let healthy = Receiver::start(Reply::Status(200)).await;
    let (bad, _) = f.webhook(&hostile.url, 2).await;
    let (good, _) = f.webhook(&healthy.url, 2).await;

    let stop = CancellationToken::new();
    let worker = tokio::spawn(f.worker(hostile_config()).run(stop.clone()));
    let started = Instant::now();
    for _ in 0..3 {
        f.ingest().await;
    }
    // The healthy webhook's deliveries are recorded as succeeded while the hostile one is still being tried.
    let healthy_done = loop {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE webhook_id = $1 AND status = 'succeeded'")
                .bind(good.id.as_str())
                .fetch_one(&f.pool)
                .await
                .expect("count");
        if done == 3 {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{mode:?}: the healthy webhook was held up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(healthy_done < Duration::from_secs(1), "{mode:?}: healthy deliveries took {healthy_done:?}");

    // Every hostile delivery ends: two tries (one second apart at most, plus the timeout) each.
    let deadline = Instant::now() + TIMEOUT * 2 + Duration::from_secs(6);
    while f.live_deliveries().await > 0 {
        assert!(Instant::now() < deadline, "{mode:?}: deliveries still live: {:?}", f.deliveries().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopping = Instant::now();
    stop.cancel();
    worker.await.expect("joins").expect("the worker stops cleanly");
    assert!(stopping.elapsed() < Duration::from_secs(3), "{mode:?}: shutdown took {:?}", stopping.elapsed());

    let mut statuses = Vec::new();
    let mut last_attempts = Vec::new();
    let mut total_attempts = 0;
    for d in f.deliveries().await.into_iter().filter(|d| d.webhook_id == bad.id) {
        let (d, attempts) =
            logs::get(&f.pool, Visibility::Operator { tenant: None }, &d.id).await.expect("get").expect("exists");
        assert_eq!(attempts.len() as u32, d.attempt_count, "{mode:?}: one recorded attempt per try: {attempts:?}");
        total_attempts += attempts.len();
        statuses.push(d.status);
        last_attempts = attempts;
    }
    assert_eq!(statuses.len(), 3, "{mode:?}");
    assert_eq!(hostile.requests(), total_attempts, "{mode:?}: requests read vs attempts recorded");
    if mode == Mode::Gone {
        // The first 410 disables the webhook; deliveries not yet attempted are cancelled, not sent.
        let disabled: Option<String> = sqlx::query_scalar("SELECT disabled_reason FROM webhooks WHERE id = $1")
            .bind(bad.id.as_str())
            .fetch_one(&f.pool)
            .await
            .expect("webhook");
        assert_eq!(disabled.as_deref(), Some("gone"));
        assert!(statuses.iter().all(|s| matches!(s, DeliveryStatus::Failed | DeliveryStatus::Cancelled)));
        assert!(statuses.contains(&DeliveryStatus::Failed), "{statuses:?}");
        return (last_attempts, DeliveryStatus::Failed);
    }
    assert!(statuses.iter().all(|s| *s == statuses[0]), "{mode:?}: {statuses:?}");
    (last_attempts, statuses[0])
}

macro_rules! hostile_case {
    ($name:ident, $mode:expr, |$attempts:ident, $status:ident| $check:block) => {
        #[sqlx::test(migrator = "courier_store::MIGRATOR")]
        async fn $name(pool: PgPool) {
            let ($attempts, $status) = survives(pool, $mode).await;
            $check
        }
    };
}

hostile_case!(a_nul_in_the_body_is_recorded_as_binary, Mode::NulBody, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Failed);
    let body = attempts[0].response_body.as_ref().expect("body kept");
    assert_eq!(body.as_bytes(), b"{\"x\":\"\0\"}", "kept exactly");
    assert!(body.is_binary());
    assert_eq!(attempts[0].status_code, Some(500));
});

hostile_case!(invalid_utf8_is_recorded_as_binary, Mode::InvalidUtf8, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Failed);
    let body = attempts[0].response_body.as_ref().expect("body kept");
    assert!(body.is_binary());
    assert!(!body.display().contains('\0'));
});

hostile_case!(a_100_mb_body_is_cut_at_4_kib, Mode::HugeBody, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Succeeded, "a 2xx status arrived");
    let body = attempts[0].response_body.as_ref().expect("body kept");
    assert_eq!(body.as_bytes().len(), courier_core::ResponseBody::MAX_BYTES);
    assert!(body.truncated());
    assert!(attempts[0].duration_ms < TIMEOUT.as_millis() as i32, "not read to the end: {attempts:?}");
});

hostile_case!(a_trickled_body_ends_at_the_timeout, Mode::Trickle, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Succeeded, "the 200 status arrived before the trickle");
    assert!(attempts[0].duration_ms <= TIMEOUT.as_millis() as i32 + 500, "{attempts:?}");
});

hostile_case!(a_receiver_that_never_answers_times_out, Mode::Silent, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Failed);
    assert_eq!(attempts[0].error_kind.as_deref(), Some("timeout"));
});

hostile_case!(a_reset_is_a_failed_attempt, Mode::Reset, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Failed);
    assert!(attempts[0].error_kind.is_some(), "{attempts:?}");
});

hostile_case!(a_close_without_answer_is_a_failed_attempt, Mode::Close, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Failed);
    assert!(attempts[0].error_kind.is_some(), "{attempts:?}");
});

hostile_case!(non_http_bytes_are_a_failed_attempt, Mode::Garbage, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Failed);
    assert!(attempts[0].error_kind.is_some(), "{attempts:?}");
    let message = attempts[0].error_message.as_deref().unwrap_or_default();
    assert!(!message.contains('\0'), "{message:?}");
});

hostile_case!(an_unknown_status_is_a_failure, Mode::Status999, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Failed);
    assert_eq!(attempts[0].status_code, Some(999));
});

hostile_case!(redirects_are_not_followed, Mode::Redirect, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Failed);
    assert_eq!(attempts[0].status_code, Some(302));
});

hostile_case!(a_300_kb_header_ends_as_an_attempt, Mode::HugeHeader, |attempts, status| {
    // hyper either takes the head (a 200: success) or refuses it as too large (a failed attempt); both are data.
    match status {
        DeliveryStatus::Succeeded => assert_eq!(attempts[0].status_code, Some(200)),
        DeliveryStatus::Failed => assert!(attempts[0].error_kind.is_some(), "{attempts:?}"),
        other => panic!("unexpected {other:?}"),
    }
});

hostile_case!(broken_chunked_encoding_keeps_the_status, Mode::BrokenChunked, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Succeeded, "the 200 arrived; an unreadable body does not change it");
    assert_eq!(attempts[0].status_code, Some(200));
});

hostile_case!(a_false_content_encoding_is_kept_as_bytes, Mode::FalseEncoding, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Succeeded);
    let body = attempts[0].response_body.as_ref().expect("body kept");
    assert_eq!(body.as_bytes(), b"this is not gzip", "not decoded");
});

hostile_case!(gone_fails_and_disables, Mode::Gone, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Failed);
    assert!(attempts.len() <= 1, "a 410 is never retried: {attempts:?}");
});

hostile_case!(too_many_requests_waits_for_retry_after, Mode::TooManyRequests, |attempts, status| {
    assert_eq!(status, DeliveryStatus::Failed);
    assert_eq!(attempts.len(), 2);
    let gap = attempts[1].started_at - attempts[0].started_at;
    assert!(gap >= chrono::Duration::milliseconds(950), "Retry-After: 1 honoured, waited {gap:?}");
});

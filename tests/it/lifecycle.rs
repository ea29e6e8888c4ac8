//! `courier serve` as a process: a hostile receiver beside a healthy one, and stopping within the deadline even when
//! the database stops answering.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use courier_core::{Environment, Scope, Scopes};
use courier_store::{api_keys, tenants};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::hostile::{Hostile, Mode};
use crate::receiver::{Receiver, Reply};
use crate::support::fresh_database;

/// A TCP proxy in front of PostgreSQL that can be frozen: connections stay open and nothing passes, the way a
/// database behind a dead network link behaves.
async fn freezable_proxy(upstream: SocketAddr, freeze: CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else { return };
            let freeze = freeze.clone();
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    () = freeze.cancelled() => std::future::pending::<()>().await,
                }
            });
        }
    });
    addr
}

pub(crate) fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().expect("client")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub(crate) struct Serve {
    child: Child,
    pub(crate) base: String,
}

impl Serve {
    pub(crate) fn start(database_url: &str, shutdown_timeout: &str) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_courier"))
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("COURIER_LISTEN", format!("127.0.0.1:{port}"))
            .env("COURIER_METRICS_LISTEN", "127.0.0.1:0")
            .env("COURIER_SECRET_KEY", courier_core::MasterKey::generate_base64())
            .env("COURIER_ALLOWED_TARGETS", "127.0.0.0/8")
            .env("COURIER_ALLOW_HTTP", "true")
            .env("COURIER_DELIVERY_TIMEOUT", "2s")
            .env("COURIER_RETRY_INITIAL", "100ms")
            .env("COURIER_RETRY_CAP", "200ms")
            .env("COURIER_SHUTDOWN_TIMEOUT", shutdown_timeout)
            .env("COURIER_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("courier serve starts");
        Self { child, base: format!("http://127.0.0.1:{port}") }
    }

    pub(crate) async fn wait_ready(&self, http: &reqwest::Client) {
        for _ in 0..300 {
            if let Ok(res) = http.get(format!("{}/readyz", self.base)).send().await
                && res.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("courier serve did not become ready");
    }

    /// Sends SIGTERM and waits for the exit; returns its code and how long it took.
    fn terminate(mut self) -> (Option<i32>, Duration) {
        let sent = Instant::now();
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().expect("kill runs");
        assert!(status.success());
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status.code(), sent.elapsed());
            }
            if sent.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!("courier serve ignored SIGTERM for a minute");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Serve {
    /// The process's peak resident set so far (VmHWM), in MiB.
    pub(crate) fn peak_rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
            .map(|kb| kb / 1024.0)
            .expect("VmHWM of the child")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn key(url: &str) -> String {
    keys(url, &[&Scope::ALL]).await.remove(0)
}

/// A migrated database's tenant with one key per scope set.
pub(crate) async fn keys(url: &str, scope_sets: &[&[Scope]]) -> Vec<String> {
    let pool = PgPool::connect(url).await.expect("connect");
    courier_store::MIGRATOR.run(&pool).await.expect("migrate");
    let tenant = tenants::create(&pool, "Acme").await.expect("tenant");
    let mut out = Vec::new();
    for scopes in scope_sets {
        let scopes = Scopes::new(scopes.iter().copied());
        out.push(api_keys::create(&pool, tenant.id, Environment::Test, &scopes).await.expect("key").plaintext);
    }
    out
}

async fn post(http: &reqwest::Client, url: String, key: &str, body: Value) -> Value {
    let res = http
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("answers");
    assert!(res.status().is_success(), "{}", res.status());
    serde_json::from_str(&res.text().await.expect("body")).expect("json")
}

#[tokio::test]
async fn a_nul_answer_is_recorded_the_healthy_webhook_delivered_and_serve_stops_in_time() {
    let url = fresh_database().await;
    let key = key(&url).await;
    let serve = Serve::start(&url, "5s");
    let http = http();
    serve.wait_ready(&http).await;

    let hostile = Hostile::start(Mode::NulBody).await;
    let healthy = Receiver::start(Reply::Status(200)).await;
    for target in [&hostile.url, &healthy.url] {
        post(&http, format!("{}/api/v1/webhooks", serve.base), &key, json!({"url": target, "max_attempts": 2})).await;
    }
    let started = Instant::now();
    for i in 0..5 {
        let event = json!({"type": "call.completed", "data": {"call_id": format!("call-{i}"), "status": "completed"}});
        post(&http, format!("{}/api/v1/events", serve.base), &key, event).await;
    }
    // Everything ends, the hostile webhook's deliveries as failed with the receiver's bytes on record.
    let pool = PgPool::connect(&url).await.expect("connect");
    loop {
        let (live, succeeded): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status IN ('pending', 'delivering')),
                    count(*) FILTER (WHERE status = 'succeeded') FROM deliveries",
        )
        .fetch_one(&pool)
        .await
        .expect("count");
        if live == 0 {
            assert_eq!(succeeded, 5, "the healthy webhook's five");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "deliveries stuck: {live} live");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(healthy.received().len(), 5, "no duplicates from stalled leases");
    let failed: String = sqlx::query_scalar("SELECT id FROM deliveries WHERE status = 'failed' LIMIT 1")
        .fetch_one(&pool)
        .await
        .expect("a failed delivery");
    let detail = http
        .get(format!("{}/api/v1/deliveries/{failed}", serve.base))
        .bearer_auth(&key)
        .send()
        .await
        .expect("answers")
        .text()
        .await
        .expect("body");
    let detail: Value = serde_json::from_str(&detail).expect("json");
    let attempt = &detail["attempts"][0];
    assert_eq!(attempt["status_code"], 500);
    assert_eq!(attempt["response_body_binary"], true, "{attempt}");
    assert_eq!(attempt["response_body_base64"], "eyJ4IjoiACJ9", "the exact bytes: {attempt}");
    assert_eq!(detail["attempts"].as_array().map(Vec::len), Some(2));

    let (code, took) = serve.terminate();
    assert_eq!(code, Some(0), "a clean stop");
    assert!(took < Duration::from_secs(5), "stopped in {took:?}");
}

#[tokio::test]
async fn serve_exits_at_its_shutdown_deadline_when_the_database_stops_answering() {
    let url = fresh_database().await;
    let key = key(&url).await;
    let mut parsed = url::Url::parse(&url).expect("url");
    let upstream: SocketAddr =
        format!("{}:{}", parsed.host_str().expect("host"), parsed.port().expect("port")).parse().expect("addr");
    let freeze = CancellationToken::new();
    let proxy = freezable_proxy(upstream, freeze.clone()).await;
    parsed.set_port(Some(proxy.port())).expect("port");
    let serve = Serve::start(parsed.as_str(), "3s");
    let http = http();
    serve.wait_ready(&http).await;
    // A request so that key usage is waiting to be flushed at shutdown, which needs the database.
    let res = http.get(format!("{}/api/v1/webhooks", serve.base)).bearer_auth(&key).send().await.expect("answers");
    assert_eq!(res.status(), 200);

    freeze.cancel();
    let (code, took) = serve.terminate();
    assert!(took >= Duration::from_millis(2500), "it did wait for the database until the deadline: {took:?}");
    assert!(took < Duration::from_secs(6), "the 3 s deadline held: {took:?}");
    assert_eq!(code, Some(1), "a stop at the deadline is not a clean one");
}

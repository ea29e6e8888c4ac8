//! Ingest from Kafka under the suite's faults: a fourth tenant's events are produced into a topic (Tansu, by
//! aiokafka with `acks=all`) instead of posted, and consumed by a `courier serve` with `COURIER_INGEST_KAFKA_*`,
//! which the suite kills with `kill -9` and starts again, besides every other fault. A produced record is accepted:
//! its event must be stored once and delivered, like an event the API answered.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;

use crate::brokers::{self, Broker};
use crate::process::Courier;
use crate::traffic::tenant;
use crate::{Args, SETTINGS, WORKER_CONCURRENCY};

const TOPIC: &str = "chaos-events";

pub struct KafkaIngest {
    _broker: Broker,
    bootstrap: String,
    url: String,
    secret: String,
    tenant: String,
    serve: Option<Courier>,
    pub kills: u64,
}

impl KafkaIngest {
    /// The broker, the topic, the tenant (its webhook to `receiver`) and the consuming `courier serve`, with the
    /// fleet's master key `secret`.
    pub async fn start(url: &str, api: &str, secret: &str, receiver: &str) -> Self {
        let broker = brokers::kafka("127.0.0.1").await;
        let bootstrap = format!("127.0.0.1:{}", broker.port);
        brokers::kafka_tool(&["create", &bootstrap, TOPIC, "2"]).await;
        tenant(url, api, "kafka", &[receiver.to_owned()], 12).await;
        let pool = PgPool::connect(url).await.expect("connect");
        let tenant: String = sqlx::query_scalar("SELECT id::text FROM tenants WHERE name = 'kafka'")
            .fetch_one(&pool)
            .await
            .expect("the kafka tenant");
        let secret = secret.to_owned();
        let mut ingest =
            Self { _broker: broker, bootstrap, url: url.to_owned(), secret, tenant, serve: None, kills: 0 };
        ingest.serve = Some(ingest.spawn().await);
        ingest
    }

    async fn spawn(&self) -> Courier {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let mut settings = SETTINGS.to_vec();
        settings.extend([
            ("COURIER_INGEST_KAFKA_BROKERS", self.bootstrap.as_str()),
            ("COURIER_INGEST_KAFKA_TOPICS", TOPIC),
        ]);
        Courier::start_with("serve", &self.url, port, &self.secret, WORKER_CONCURRENCY, &settings).await
    }

    /// Produces a tenth of `rate` events a second for `seconds`, a second's worth at a time; the ids produced (each
    /// acknowledged by the broker).
    pub fn produce(&self, rate: u64, seconds: u64) -> tokio::task::JoinHandle<Vec<String>> {
        let (bootstrap, tenant) = (self.bootstrap.clone(), self.tenant.clone());
        let produced = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(async move {
            let per_second = (rate / 10).max(1);
            let begun = Instant::now();
            let mut n = 0u64;
            while begun.elapsed() < Duration::from_secs(seconds) {
                let second = Instant::now();
                let ids: Vec<String> = (n..n + per_second).map(|i| format!("evt_kafka_chaos_{i}")).collect();
                n += per_second;
                let lines: Vec<String> = ids
                    .iter()
                    .map(|id| {
                        let event = json!({"id": id, "type": "call.completed",
                                           "data": {"call_id": format!("call-{id}"), "status": "completed"}});
                        let headers = [["courier-tenant", tenant.as_str()], ["courier-environment", "test"]];
                        json!({"key": format!("call-{id}"), "value": event.to_string(), "headers": headers}).to_string()
                    })
                    .collect();
                brokers::kafka_tool_reading(&["produce", &bootstrap, TOPIC], lines.join("\n").as_bytes()).await;
                produced.lock().expect("lock").extend(ids);
                tokio::time::sleep(Duration::from_secs(1).saturating_sub(second.elapsed())).await;
            }
            std::mem::take(&mut *produced.lock().expect("lock"))
        })
    }

    /// Kills the consuming `courier serve` once in a short run, else about every quarter of the load, never while
    /// PostgreSQL is down (halfway), and starts it again.
    pub async fn kill_now_and_then(&mut self, a: &Args) {
        let load = Duration::from_secs(a.seconds);
        let at: Vec<Duration> = if a.short { vec![load / 3] } else { vec![load / 4, load * 5 / 8, load * 7 / 8] };
        let begun = Instant::now();
        for when in at {
            tokio::time::sleep(when.saturating_sub(begun.elapsed())).await;
            if let Some(serve) = self.serve.take() {
                serve.kill();
            }
            self.kills += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.serve = Some(self.spawn().await);
        }
    }

    /// Starts the consumer again if it exited by itself.
    pub async fn restart_exited(&mut self) {
        if self.serve.as_mut().is_none_or(Courier::has_exited) {
            self.serve = Some(self.spawn().await);
        }
    }

    /// Waits until every produced event is stored, at most a minute (a consumer that came back waits out its dead
    /// predecessor's session first).
    pub async fn until_stored(pool: &PgPool, produced: &[String]) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE id = ANY ($1)")
                .bind(produced)
                .fetch_one(pool)
                .await
                .expect("count");
            if stored as usize == produced.len() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

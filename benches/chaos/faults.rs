//! The faults: the suite's own PostgreSQL cluster (crashed once), and the fleet of Courier processes it kills.

use std::path::Path;
use std::time::{Duration, Instant};

use courier::embedded_db::EmbeddedDb;

use crate::brokers::Broker;
use crate::process::Courier;
use crate::traffic::Dice;
use crate::{Args, SETTINGS, WORKER_CONCURRENCY};

pub struct Cluster {
    pub db: EmbeddedDb,
    pub url: String,
}

impl Cluster {
    pub async fn start() -> Self {
        let db = EmbeddedDb::locate(Path::new(".courier/chaos")).expect("PostgreSQL");
        let base = db.start().await.expect("the suite's PostgreSQL starts");
        let (prefix, _) = base.rsplit_once('/').expect("URL has a database");
        let name = format!("courier_chaos_{}", std::process::id());
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&base).await.expect("connect");
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
            .execute(&mut admin)
            .await
            .expect("drop");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.expect("create");
        Self { db, url: format!("{prefix}/{name}") }
    }

    async fn crash_and_restart(&self, down: Duration) {
        self.db.crash().expect("pg_ctl -m immediate stop");
        tokio::time::sleep(down).await;
        self.db.start().await.expect("PostgreSQL restarts after the crash");
    }
}

#[derive(Default, Debug)]
pub struct Faults {
    pub worker_kills: u64,
    pub api_kills: u64,
    pub postgres_crashes: u64,
    /// Restarts of the broker tenant's Redis (`kill -9`, down for a second, started again with its data).
    pub broker_restarts: u64,
    /// `kill -9`s of the `courier serve` that consumes the Kafka tenant's topic.
    pub ingest_kills: u64,
    /// Processes that exited by themselves (a start while PostgreSQL was down) and were started again, as a
    /// process supervisor would.
    pub restarted_after_exit: u64,
}

/// `courier api` on a fixed port and two `courier worker`s, all on the suite's cluster.
pub struct Fleet {
    url: String,
    secret: String,
    port: u16,
    api: Option<Courier>,
    workers: Vec<Courier>,
}

impl Fleet {
    pub async fn start(url: &str) -> Self {
        let secret = courier_core::MasterKey::generate_base64();
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let mut fleet = Self { url: url.to_owned(), secret, port, api: None, workers: Vec::new() };
        fleet.api = Some(fleet.spawn("api").await);
        fleet.workers = vec![fleet.spawn("worker").await, fleet.spawn("worker").await];
        fleet
    }

    /// The master key every process of the fleet shares (one that joins it must use it too, or it cannot open the
    /// webhooks' secrets).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn spawn(&self, role: &'static str) -> Courier {
        let port = if role == "api" { self.port } else { 0 };
        Courier::start_with(role, &self.url, port, &self.secret, WORKER_CONCURRENCY, SETTINGS).await
    }

    /// As a process supervisor would: start again whatever exited by itself.
    pub async fn restart_exited(&mut self, faults: &mut Faults) {
        for i in 0..self.workers.len() {
            if self.workers[i].has_exited() {
                self.workers[i] = self.spawn("worker").await;
                faults.restarted_after_exit += 1;
            }
        }
    }

    /// Kills a worker about every `kill_every` seconds, the API now and then, restarts the broker once a quarter
    /// in and crashes PostgreSQL once halfway, for `seconds`; returns what it did.
    pub async fn inject_faults(&mut self, a: &Args, cluster: &Cluster, broker: &mut Broker) -> Faults {
        let mut dice = Dice(a.seed.max(1));
        let mut faults = Faults::default();
        let begun = Instant::now();
        let load_for = Duration::from_secs(a.seconds);
        let (mut crashed, mut restarted) = (false, false);
        let mut next_api_kill = Duration::from_secs_f64(a.kill_every * 5.5);
        while begun.elapsed() < load_for {
            let pause = a.kill_every * (0.5 + (dice.next() % 100) as f64 / 100.0);
            tokio::time::sleep(Duration::from_secs_f64(pause)).await;
            self.restart_exited(&mut faults).await;
            let which = (dice.next() % 2) as usize;
            self.workers.remove(which).kill();
            let replacement = self.spawn("worker").await;
            self.workers.insert(which, replacement);
            faults.worker_kills += 1;
            if begun.elapsed() >= next_api_kill {
                if let Some(api) = self.api.take() {
                    api.kill();
                }
                faults.api_kills += 1;
                // The emitter sees refused connections meanwhile, and retries.
                tokio::time::sleep(Duration::from_millis(300)).await;
                self.api = Some(self.spawn("api").await);
                next_api_kill += Duration::from_secs_f64(a.kill_every * (5.0 + (dice.next() % 400) as f64 / 100.0));
            }
            if !restarted && begun.elapsed() >= load_for / 4 {
                restarted = true;
                broker.stop().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                broker.start_again().await;
                faults.broker_restarts += 1;
            }
            if !crashed && begun.elapsed() >= load_for / 2 {
                crashed = true;
                cluster.crash_and_restart(Duration::from_secs(1)).await;
                faults.postgres_crashes += 1;
            }
        }
        faults
    }
}

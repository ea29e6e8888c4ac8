//! One scenario's world: its own database on the cluster, Courier as a child process, a tenant with an emitter
//! key and an admin key, and webhooks to the scenario's receivers.

use std::time::Duration;

use serde_json::{Value, json};

use crate::process::{Courier, cli};
use crate::receiver::Receiver;

pub struct Setup {
    pub courier: Courier,
    pub url: String,
    pub secret_key: String,
    pub emitter: String,
    pub admin_key: String,
    pub receivers: Vec<Receiver>,
    database: String,
    admin_url: String,
}

pub async fn setup(cluster_url: &str, name: &str, receivers: Vec<Receiver>, concurrency: usize) -> Setup {
    setup_as(cluster_url, name, receivers, concurrency, "serve").await
}

pub async fn setup_as(
    cluster_url: &str,
    name: &str,
    receivers: Vec<Receiver>,
    concurrency: usize,
    command: &str,
) -> Setup {
    setup_with(cluster_url, name, receivers, concurrency, command, &[]).await
}

/// The database a scenario named `name` runs in.
pub fn database_name(name: &str) -> String {
    format!("courier_bench_{name}_{}", std::process::id())
}

/// [`setup_as`] with more settings for Courier.
pub async fn setup_with(
    cluster_url: &str,
    name: &str,
    receivers: Vec<Receiver>,
    concurrency: usize,
    command: &str,
    settings: &[(&str, &str)],
) -> Setup {
    let (prefix, _) = cluster_url.rsplit_once('/').expect("URL has a database");
    let database = database_name(name);
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(cluster_url).await.expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {database}")))
        .execute(&mut admin)
        .await
        .expect("drop");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}"))).execute(&mut admin).await.expect("create");
    let url = format!("{prefix}/{database}");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let secret_key = courier_core::MasterKey::generate_base64();
    let courier = Courier::start_with(command, &url, port, &secret_key, concurrency, settings).await;
    let tenant = cli(&url, &["tenants", "create", "--name", "bench", "--json"]);
    let tenant = tenant["id"].as_str().expect("tenant id");
    let key = |scopes: &str| {
        cli(&url, &["keys", "create", "--tenant", tenant, "--env", "test", "--scopes", scopes, "--json"])
    };
    let admin_key = key("webhooks:write")["key"].as_str().expect("key").to_owned();
    let emitter = key("events:write")["key"].as_str().expect("key").to_owned();
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    for r in &receivers {
        let res = http
            .post(format!("{}/api/v1/webhooks", courier.base))
            .bearer_auth(&admin_key)
            .body(json!({"url": r.url}).to_string())
            .send()
            .await
            .expect("create webhook");
        assert_eq!(res.status().as_u16(), 201);
    }
    Setup { courier, url, secret_key, emitter, admin_key, receivers, database, admin_url: cluster_url.to_owned() }
}

impl Setup {
    /// Creates a webhook as the tenant's admin key would.
    pub async fn create_webhook(&self, body: Value) {
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        let res = http
            .post(format!("{}/api/v1/webhooks", self.courier.base))
            .bearer_auth(&self.admin_key)
            .body(body.to_string())
            .send()
            .await
            .expect("create webhook");
        assert_eq!(res.status().as_u16(), 201, "{}", res.text().await.unwrap_or_default());
    }

    pub async fn teardown(self) {
        drop(self.courier);
        if let Ok(mut admin) = <sqlx::PgConnection as sqlx::Connection>::connect(&self.admin_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database)))
                .execute(&mut admin)
                .await;
        }
    }
}

/// `n` receivers, each answering after `hang` when given (see [`Receiver::start`]).
pub async fn start_receivers(n: usize, hang: Option<Duration>) -> Vec<Receiver> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Receiver::start(hang).await);
    }
    out
}

/// The benchmark's PostgreSQL: `DATABASE_URL` when set, else the embedded cluster under `.courier`.
pub async fn cluster() -> String {
    match std::env::var("DATABASE_URL") {
        Ok(url) => url,
        Err(_) => courier::embedded_db::EmbeddedDb::locate(std::path::Path::new(".courier"))
            .expect("PostgreSQL")
            .start()
            .await
            .expect("the embedded PostgreSQL starts"),
    }
}

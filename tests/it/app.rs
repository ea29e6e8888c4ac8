//! `spawn_app`: the real server on port 0 with workers, on a test's database.

use courier::app::{Application, Role};
use courier::settings::Settings;
use courier_core::MasterKey;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    /// `http://127.0.0.1:<port>` of `/metrics`.
    #[allow(dead_code)] // Only the metrics test binary scrapes.
    pub metrics: String,
    stop: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
}

/// Starts Courier (API and workers) with loopback targets allowed and retries in `retry_initial`.
pub async fn spawn_app(pool: PgPool, retry_initial: &str) -> TestApp {
    spawn_app_with(pool, &[("COURIER_RETRY_INITIAL", retry_initial)]).await
}

/// [`spawn_app`] with these environment variables besides.
pub async fn spawn_app_with(pool: PgPool, env: &[(&str, &str)]) -> TestApp {
    let master = MasterKey::generate_base64();
    let settings = Settings::from_sources(None, |name| {
        match name {
            "COURIER_LISTEN" | "COURIER_METRICS_LISTEN" => Some("127.0.0.1:0"),
            "COURIER_SECRET_KEY" => Some(master.as_str()),
            "COURIER_ALLOWED_TARGETS" => Some("127.0.0.0/8"),
            _ => env.iter().find(|(n, _)| *n == name).map(|(_, v)| *v),
        }
        .map(str::to_owned)
    })
    .expect("settings");
    let app =
        Application::build(&settings, courier_store::cluster::Database::single(pool), Role::All).await.expect("app");
    let base = format!("http://{}", app.addr());
    let metrics = format!("http://{}", app.metrics_addr().expect("metrics listener"));
    let stop = CancellationToken::new();
    let server = tokio::spawn(app.run(stop.clone()));
    let _ = rustls::crypto::ring::default_provider().install_default();
    TestApp { base, metrics, stop, server }
}

impl TestApp {
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().expect("client")
    }

    /// Asks for a graceful shutdown and checks it was clean.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.server.await.expect("joins").expect("shuts down cleanly");
    }
}

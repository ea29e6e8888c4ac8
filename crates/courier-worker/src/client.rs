//! The hardened HTTP client every delivery goes through.

use std::sync::Arc;
use std::time::Duration;

use crate::ssrf::{GuardedResolver, TargetPolicy};

/// How the client talks to receivers.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub policy: Arc<TargetPolicy>,
}

pub const USER_AGENT: &str = concat!("Courier/", env!("CARGO_PKG_VERSION"));

/// How long an idle pooled connection is kept. Below the shortest keep-alive timeout common among receivers'
/// servers (gunicorn closes idle connections after 2 s, Node and uvicorn after 5 s), so a connection is rarely
/// reused just as its server closes it; when it still is, the request is sent again (see [`Clients`]).
pub const POOL_IDLE: Duration = Duration::from_millis(1_500);

/// The clients of one worker: `pooled`, which every attempt uses first, and `fresh`, which keeps no connection,
/// for sending a request again when a pooled connection failed before anything of the answer arrived.
#[derive(Debug, Clone)]
pub struct Clients {
    pub pooled: reqwest::Client,
    pub fresh: reqwest::Client,
    /// An attempt's whole time, both sends included.
    pub timeout: Duration,
}

/// Redirects off (a 3xx is a failed attempt), timeouts set, every resolved address vetted; one client with
/// keep-alive pools and one without.
pub fn build(config: &ClientConfig) -> Result<Clients, reqwest::Error> {
    Ok(Clients {
        pooled: builder(config).pool_idle_timeout(POOL_IDLE).pool_max_idle_per_host(64).build()?,
        fresh: builder(config).pool_max_idle_per_host(0).build()?,
        timeout: config.timeout,
    })
}

fn builder(config: &ClientConfig) -> reqwest::ClientBuilder {
    // Installing the process-wide TLS provider fails harmlessly when another part of the process already did.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.timeout)
        .connect_timeout(config.connect_timeout)
        .user_agent(USER_AGENT)
        .tcp_nodelay(true)
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver { policy: config.policy.clone() }))
}

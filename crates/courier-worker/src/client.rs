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

/// Redirects off (a 3xx is a failed attempt), timeouts set, keep-alive pools on, every resolved address vetted.
pub fn build(config: &ClientConfig) -> Result<reqwest::Client, reqwest::Error> {
    // Installing the process-wide TLS provider fails harmlessly when another part of the process already did.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.timeout)
        .connect_timeout(config.connect_timeout)
        .user_agent(USER_AGENT)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver { policy: config.policy.clone() }))
        .build()
}

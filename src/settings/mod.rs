//! One typed configuration, layered: defaults < TOML file (`--config`) < environment.
//!
//! Every setting has one name. In the environment it is `COURIER_<NAME>` (and `DATABASE_URL` and the standard
//! `OTEL_EXPORTER_OTLP_*` and `OTEL_SERVICE_NAME` variables, under their own names);
//! in the TOML file it is `<name>` in lower case, e.g. `retry_initial = "30s"`.
//! Values are parsed and validated here, once, with an error that names the variable.
//! `config/courier.toml` lists every setting with its default and doubles as documentation.
//! Each component gets its own typed configuration from here ([`Settings::api_config`],
//! [`Settings::worker_config`]); none reads the environment itself. Secrets are [`SecretString`] (`secrecy`) or
//! [`DatabaseUrl`], so no `Debug` output shows them.
//!
//! `layers::SETTINGS` is the one list of settings: a load fails on one declared and never read, the README's table and
//! `config/courier.toml` are tested against it. Why not `figment`: its current release (0.10.19) reads TOML with
//! `toml_edit` 0.22, a second TOML stack (with `winnow` 0.7 and `toml_datetime` 0.6) beside the `toml` 1 we ship;
//! and it would replace only the sixty lines of `Layers::load` (each value with its source, for the error), none of
//! the parsers, which are ours either way (durations, CIDR lists, a URL derived from the listen address).

mod components;
mod ingest;
mod layers;
mod sections;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use courier_core::RetryPolicy;
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};

pub use ingest::KafkaIngestSettings;
use layers::Layers;

/// Everything Courier can be told.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub api: ApiSettings,
    pub delivery: DeliverySettings,
    pub retention: RetentionSettings,
    pub lifecycle: LifecycleSettings,
    pub log: LogSettings,
    /// Events consumed from Kafka topics by `courier serve`, when brokers are named.
    pub kafka_ingest: Option<KafkaIngestSettings>,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`. When absent, `courier dev` starts the embedded cluster; other commands refuse to start.
    pub url: Option<DatabaseUrl>,
    /// `COURIER_DATABASE_MAX_CONNECTIONS`: the pool size of one process.
    pub max_connections: u32,
    /// `COURIER_READ_DATABASE_URL`: replicas for the read-only API and portal queries (several in libpq's syntax).
    pub read_url: Option<DatabaseUrl>,
    /// `COURIER_READ_MAX_LAG`: a replica further behind than this is skipped, and the primary serves.
    pub read_max_lag: Duration,
}

#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// `COURIER_LISTEN`: where the HTTP API listens.
    pub listen: SocketAddr,
    /// `COURIER_METRICS_LISTEN`: where `/metrics` is served, apart from the public API; empty turns it off.
    pub metrics_listen: Option<SocketAddr>,
    /// `COURIER_SECRET_KEY`: base64 of the 32-byte master key that encrypts webhook secrets.
    /// Required outside the development mode, which generates and keeps its own.
    pub secret_key: Option<SecretString>,
    /// `COURIER_ALLOW_HTTP`: let live-mode webhooks use plain `http`.
    pub allow_http: bool,
    /// `COURIER_RELAY_LIVE`: let live-mode keys create `relay` webhooks (for `courier listen`).
    pub relay_live: bool,
    /// `COURIER_ROTATION_GRACE`: how long a rotated-out secret keeps signing.
    pub rotation_grace: Duration,
    /// `COURIER_RATE_LIMIT` (requests per second per key) and `COURIER_RATE_LIMIT_BURST`; a rate of 0 turns it off.
    pub rate_limit: Option<(f64, f64)>,
    /// `COURIER_TRUSTED_PROXIES`: comma-separated CIDRs of the load balancers in front of Courier. From a peer in
    /// them, the client's address is the right-most untrusted hop of `X-Forwarded-For` (for the failed-login limit).
    pub trusted_proxies: Vec<IpNet>,
    /// `COURIER_MAX_WEBHOOKS`: webhooks one tenant may have.
    pub max_webhooks: u32,
    /// `COURIER_MAX_RUNNING_REPLAYS`: bulk replays one tenant may have queued or running at once.
    pub max_running_replays: u32,
    /// `COURIER_API_STATEMENT_TIMEOUT`: the longest one API statement may run (then 503).
    pub statement_timeout: Duration,
    /// `COURIER_PUBLIC_URL`: the base of the links Courier hands out (portal magic links); empty means
    /// `http://` + `COURIER_LISTEN`. An `https` base also marks the portal's cookie `Secure`.
    pub public_url: url::Url,
    /// `COURIER_PORTAL_FRAME_ANCESTORS`: the CSP `frame-ancestors` sources that may embed the portal in a frame
    /// (e.g. `https://studio.example.com`); `'none'` by default.
    pub portal_frame_ancestors: String,
}

#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// `COURIER_ALLOWED_TARGETS`: comma-separated CIDRs exempt from the SSRF guard.
    pub allowed_targets: Vec<IpNet>,
    /// `COURIER_RETRY_INITIAL`, `COURIER_RETRY_MULTIPLIER`, `COURIER_RETRY_CAP`, `COURIER_RETRY_JITTER`.
    pub retry: RetryPolicy,
    /// `COURIER_MAX_ATTEMPTS`: the default attempt budget of a new webhook (1–25).
    pub max_attempts: u32,
    /// `COURIER_DELIVERY_TIMEOUT`: the whole request to a receiver.
    pub timeout: Duration,
    /// `COURIER_CONNECT_TIMEOUT`: the TCP and TLS handshake.
    pub connect_timeout: Duration,
    /// `COURIER_POLL_INTERVAL`: how often an idle worker looks for due work without a notification (retries become
    /// due silently).
    pub poll_interval: Duration,
    /// `COURIER_WORKER_CONCURRENCY`: deliveries in flight per process.
    pub concurrency: usize,
    /// `COURIER_WEBHOOK_CONCURRENCY`: deliveries in flight per webhook per process.
    pub per_webhook_concurrency: usize,
    /// `COURIER_TENANT_CONCURRENCY`: deliveries one tenant may hold per process; by default all but one webhook's
    /// share, so another tenant always finds room.
    pub per_tenant_concurrency: usize,
    /// `COURIER_DISABLE_AFTER`: disable a webhook whose deliveries have all failed for this long (`0s` never does).
    pub disable_after: Duration,
    /// `COURIER_DISABLE_MIN_FAILURES`: …and only once at least this many deliveries were exhausted.
    pub disable_min_failures: u32,
}

#[derive(Debug, Clone)]
pub struct LifecycleSettings {
    /// `COURIER_SHUTDOWN_TIMEOUT`: after SIGTERM or ctrl-c, the process exits within this long whatever is still
    /// running (in-flight attempts get most of it; what is left unrecorded comes back when its lease runs out).
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// `COURIER_RETENTION`: how long events, deliveries and attempts are kept (whole days; 30d by default).
    /// A tenant's `retention_days` overrides it.
    pub days: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    /// `COURIER_LOG_FORMAT`: `pretty` (default) or `json`.
    pub format: LogFormat,
    /// Where spans go over OTLP/HTTP: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given, else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`. Unset: no export.
    pub otlp_traces_endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME`: the service name on exported spans (`courier`).
    pub service_name: String,
}

/// `DATABASE_URL`: shown (in `Debug`) without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(pub String);

impl DatabaseUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    /// The URL with its password replaced, written by hand: a multi-host URL (`h1:5432,h2:5432`) is no URL to the
    /// `url` crate.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some((scheme, rest)) = self.0.split_once("://") else { return f.write_str("[unparsable]") };
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        match rest[..authority_end].rfind('@') {
            Some(at) => {
                let user = rest[..at].split_once(':').map_or(&rest[..at], |(user, _)| user);
                let redacted = if rest[..at].contains(':') { ":redacted" } else { "" };
                write!(f, "{scheme}://{user}{redacted}{}", &rest[at..])
            }
            None => write!(f, "{scheme}://{rest}"),
        }
    }
}

impl Settings {
    /// Loads the layers: defaults, then the optional TOML file, then the process environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        Self::from_sources(file, |name| std::env::var(name).ok())
    }

    /// Like [`Settings::load`] with an explicit environment, so tests need not touch the process's.
    pub fn from_sources(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let l = Layers::load(file, env)?;
        let settings = Settings {
            database: DatabaseSettings::from_layers(&l)?,
            api: ApiSettings::from_layers(&l)?,
            delivery: DeliverySettings::from_layers(&l)?,
            retention: RetentionSettings::from_layers(&l)?,
            lifecycle: LifecycleSettings::from_layers(&l)?,
            log: LogSettings::from_layers(&l)?,
            kafka_ingest: KafkaIngestSettings::from_layers(&l)?,
        };
        let unread = l.unread();
        anyhow::ensure!(unread.is_empty(), "settings declared but never read: {unread:?}");
        if let Some(key) = &settings.api.secret_key {
            courier_core::MasterKey::from_base64(key.expose_secret()).context("invalid COURIER_SECRET_KEY")?;
        }
        Ok(settings)
    }

    /// The master key, which every command that touches webhook secrets needs.
    pub fn master_key(&self) -> anyhow::Result<courier_core::MasterKey> {
        let text = self.api.secret_key.as_ref().context("COURIER_SECRET_KEY is required (base64 of 32 bytes)")?;
        Ok(courier_core::MasterKey::from_base64(text.expose_secret())?)
    }
}

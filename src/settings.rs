//! One typed configuration, layered: defaults < TOML file (`--config`) < environment.
//!
//! Every setting has one name. In the environment it is `COURIER_<NAME>` (and `DATABASE_URL` and the standard
//! `OTEL_EXPORTER_OTLP_*` variables, under their own names);
//! in the TOML file it is `<name>` in lower case, e.g. `retry_initial = "30s"`.
//! Values are parsed and validated here, once, with an error that names the variable.
//! `config/courier.toml` lists every setting with its default and doubles as documentation.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use courier_core::RetryPolicy;
use ipnet::IpNet;

/// Everything Courier can be told.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub api: ApiSettings,
    pub delivery: DeliverySettings,
    pub retention: RetentionSettings,
    pub lifecycle: LifecycleSettings,
    pub log: LogSettings,
}

#[derive(Clone)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`. When absent, `courier dev` starts the embedded cluster; other commands refuse to start.
    pub url: Option<String>,
    /// `COURIER_DATABASE_MAX_CONNECTIONS`: the pool size of one process.
    pub max_connections: u32,
}

#[derive(Clone)]
pub struct ApiSettings {
    /// `COURIER_LISTEN`: where the HTTP API listens.
    pub listen: SocketAddr,
    /// `COURIER_METRICS_LISTEN`: where `/metrics` is served, apart from the public API; empty turns it off.
    pub metrics_listen: Option<SocketAddr>,
    /// `COURIER_SECRET_KEY`: base64 of the 32-byte master key that encrypts webhook secrets.
    /// Required outside the development mode, which generates and keeps its own.
    pub secret_key: Option<String>,
    /// `COURIER_ALLOW_HTTP`: let live-mode webhooks use plain `http`.
    pub allow_http: bool,
    /// `COURIER_ROTATION_GRACE`: how long a rotated-out secret keeps signing.
    pub rotation_grace: Duration,
    /// `COURIER_RATE_LIMIT` (requests per second per key) and `COURIER_RATE_LIMIT_BURST`; a rate of 0 turns it off.
    pub rate_limit: Option<(f64, f64)>,
    /// `COURIER_MAX_WEBHOOKS`: webhooks one tenant may have.
    pub max_webhooks: u32,
    /// `COURIER_API_STATEMENT_TIMEOUT`: the longest one API statement may run (then 503).
    pub statement_timeout: Duration,
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
}

/// `DATABASE_URL` without its password, for anything that may be logged.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "[unparsable]".to_owned(),
    }
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("listen", &self.listen)
            .field("metrics_listen", &self.metrics_listen)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "[redacted]"))
            .field("allow_http", &self.allow_http)
            .field("rotation_grace", &self.rotation_grace)
            .field("rate_limit", &self.rate_limit)
            .field("max_webhooks", &self.max_webhooks)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// The raw layered values, by setting name.
struct Layers(BTreeMap<&'static str, (String, &'static str)>);

/// Every setting: its name and default. The environment variable is `COURIER_` + upper case, except `database_url`.
const SETTINGS: &[(&str, Option<&str>)] = &[
    ("database_url", None),
    ("database_max_connections", Some("20")),
    ("listen", Some("127.0.0.1:8080")),
    ("metrics_listen", Some("127.0.0.1:9090")),
    ("secret_key", None),
    ("allow_http", Some("false")),
    ("rotation_grace", Some("24h")),
    ("rate_limit", Some("1000")),
    ("rate_limit_burst", Some("2000")),
    ("max_webhooks", Some("100")),
    ("api_statement_timeout", Some("5s")),
    ("allowed_targets", Some("")),
    ("retry_initial", Some("30s")),
    ("retry_multiplier", Some("4")),
    ("retry_cap", Some("24h")),
    ("retry_jitter", Some("0.2")),
    ("max_attempts", Some("5")),
    ("delivery_timeout", Some("15s")),
    ("connect_timeout", Some("5s")),
    ("worker_concurrency", Some("256")),
    ("webhook_concurrency", Some("64")),
    ("tenant_concurrency", Some("")),
    ("disable_after", Some("5d")),
    ("disable_min_failures", Some("10")),
    ("retention", Some("30d")),
    ("shutdown_timeout", Some("30s")),
    ("log_format", Some("pretty")),
    ("otel_exporter_otlp_endpoint", None),
    ("otel_exporter_otlp_traces_endpoint", None),
    ("otel_exporter_otlp_protocol", None),
];

/// `COURIER_<NAME>`, except for settings whose variables are someone else's standard.
fn env_name(name: &str) -> String {
    if name == "database_url" || name.starts_with("otel_") {
        name.to_uppercase()
    } else {
        format!("COURIER_{}", name.to_uppercase())
    }
}

impl Layers {
    fn get(&self, name: &str) -> Option<&(String, &'static str)> {
        self.0.get(name)
    }

    fn parse<T>(&self, name: &str, parse: impl FnOnce(&str) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let (value, source) = self.get(name).with_context(|| format!("{} is required", env_name(name)))?;
        parse(value).with_context(|| format!("invalid {} (from {source}): `{value}`", env_name(name)))
    }
}

fn otlp_traces_endpoint(l: &Layers) -> anyhow::Result<Option<String>> {
    let set = |name| l.get(name).map(|(v, _)| v.trim().to_owned()).filter(|v| !v.is_empty());
    let endpoint = match (set("otel_exporter_otlp_traces_endpoint"), set("otel_exporter_otlp_endpoint")) {
        (Some(traces), _) => ("otel_exporter_otlp_traces_endpoint", traces),
        (None, Some(base)) => ("otel_exporter_otlp_endpoint", format!("{}/v1/traces", base.trim_end_matches('/'))),
        (None, None) => return Ok(None),
    };
    if let Some((protocol, source)) = l.get("otel_exporter_otlp_protocol")
        && protocol.trim() != "http/protobuf"
    {
        bail!(
            "invalid OTEL_EXPORTER_OTLP_PROTOCOL (from {source}): `{protocol}`: Courier exports over http/protobuf \
             only (a collector's port 4318)"
        );
    }
    let (name, url) = endpoint;
    l.parse(name, |_| {
        let parsed = url::Url::parse(&url)?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("an OTLP/HTTP endpoint is an http or https URL");
        }
        Ok(Some(url.clone()))
    })
}

fn duration(s: &str) -> anyhow::Result<Duration> {
    Ok(humantime::parse_duration(s.trim())?)
}

/// A duration parser that refuses anything shorter than `min`.
fn at_least(min: Duration) -> impl Fn(&str) -> anyhow::Result<Duration> {
    move |s| {
        let d = duration(s)?;
        if d < min {
            bail!("must be at least {}", humantime::format_duration(min));
        }
        Ok(d)
    }
}

fn boolean(s: &str) -> anyhow::Result<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => bail!("expected true or false"),
    }
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(s: &str) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let v: T = s.trim().parse()?;
    if v <= T::default() {
        bail!("must be greater than zero");
    }
    Ok(v)
}

impl Settings {
    /// Loads the layers: defaults, then the optional TOML file, then the process environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        Self::from_sources(file, |name| std::env::var(name).ok())
    }

    /// Like [`Settings::load`] with an explicit environment, so tests need not touch the process's.
    pub fn from_sources(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let mut layers = Layers(BTreeMap::new());
        for (name, default) in SETTINGS {
            if let Some(default) = default {
                layers.0.insert(name, ((*default).to_owned(), "default"));
            }
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let table: toml::Table = text.parse().with_context(|| format!("{} is not valid TOML", path.display()))?;
            for (key, value) in table {
                let Some((name, _)) = SETTINGS.iter().find(|(n, _)| *n == key) else {
                    bail!("{}: unknown setting `{key}`", path.display());
                };
                let text = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|i| i.as_str().map(str::to_owned).unwrap_or_else(|| i.to_string()))
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                };
                layers.0.insert(name, (text, "config file"));
            }
        }
        for (name, _) in SETTINGS {
            if let Some(value) = env(&env_name(name)) {
                layers.0.insert(name, (value, "environment"));
            }
        }
        Self::from_layers(&layers)
    }

    fn from_layers(l: &Layers) -> anyhow::Result<Self> {
        let retry = RetryPolicy {
            initial: l.parse("retry_initial", duration)?,
            multiplier: l.parse("retry_multiplier", |s| {
                let m: f64 = s.trim().parse()?;
                if !(1.0..=100.0).contains(&m) {
                    bail!("must be between 1 and 100");
                }
                Ok(m)
            })?,
            cap: l.parse("retry_cap", duration)?,
            jitter: l.parse("retry_jitter", |s| {
                let j: f64 = s.trim().parse()?;
                if !(0.0..1.0).contains(&j) {
                    bail!("must be at least 0 and below 1");
                }
                Ok(j)
            })?,
        };
        let timeout = l.parse("delivery_timeout", duration)?;
        if timeout.is_zero() {
            bail!("invalid COURIER_DELIVERY_TIMEOUT: must be greater than zero");
        }
        let settings = Settings {
            database: DatabaseSettings {
                url: l.get("database_url").map(|(v, _)| v.clone()).filter(|v| !v.is_empty()),
                max_connections: l.parse("database_max_connections", positive)?,
            },
            api: ApiSettings {
                listen: l.parse("listen", |s| Ok(s.trim().parse()?))?,
                metrics_listen: l.parse("metrics_listen", |s| match s.trim() {
                    "" => Ok(None),
                    addr => Ok(Some(addr.parse()?)),
                })?,
                secret_key: l.get("secret_key").map(|(v, _)| v.clone()).filter(|v| !v.is_empty()),
                allow_http: l.parse("allow_http", boolean)?,
                rotation_grace: l.parse("rotation_grace", duration)?,
                rate_limit: {
                    let rate: f64 = l.parse("rate_limit", |s| {
                        let r: f64 = s.trim().parse()?;
                        if !(r >= 0.0 && r.is_finite()) {
                            bail!("must be zero (off) or a positive number of requests per second");
                        }
                        Ok(r)
                    })?;
                    let burst: f64 = l.parse("rate_limit_burst", positive)?;
                    (rate > 0.0).then_some((rate, burst.max(1.0)))
                },
                max_webhooks: l.parse("max_webhooks", positive)?,
                statement_timeout: l.parse("api_statement_timeout", at_least(Duration::from_millis(10)))?,
            },
            delivery: DeliverySettings {
                allowed_targets: l.parse("allowed_targets", |s| {
                    s.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(|p| p.parse::<IpNet>().with_context(|| format!("`{p}` is not a CIDR")))
                        .collect()
                })?,
                retry,
                max_attempts: l.parse("max_attempts", |s| {
                    let n: u32 = s.trim().parse()?;
                    if !(1..=25).contains(&n) {
                        bail!("must be between 1 and 25");
                    }
                    Ok(n)
                })?,
                timeout,
                connect_timeout: l.parse("connect_timeout", duration)?,
                concurrency: l.parse("worker_concurrency", positive)?,
                per_webhook_concurrency: l.parse("webhook_concurrency", positive)?,
                per_tenant_concurrency: {
                    let concurrency = l.parse("worker_concurrency", positive)?;
                    let per_webhook = l.parse("webhook_concurrency", positive)?;
                    l.parse("tenant_concurrency", |s| match s.trim() {
                        "" => Ok(courier_worker::WorkerConfig::default_per_tenant(concurrency, per_webhook)),
                        _ => positive(s),
                    })?
                },
                disable_after: l.parse("disable_after", duration)?,
                disable_min_failures: l.parse("disable_min_failures", positive)?,
            },
            retention: RetentionSettings {
                days: l.parse("retention", |s| {
                    let days = duration(s)?.as_secs() / 86_400;
                    if days == 0 {
                        bail!("must be at least one day");
                    }
                    Ok(u32::try_from(days)?)
                })?,
            },
            lifecycle: LifecycleSettings {
                shutdown_timeout: l.parse("shutdown_timeout", at_least(Duration::from_secs(1)))?,
            },
            log: LogSettings {
                format: l.parse("log_format", |s| match s.trim() {
                    "pretty" => Ok(LogFormat::Pretty),
                    "json" => Ok(LogFormat::Json),
                    _ => bail!("expected `pretty` or `json`"),
                })?,
                otlp_traces_endpoint: otlp_traces_endpoint(l)?,
            },
        };
        if let Some(key) = &settings.api.secret_key {
            courier_core::MasterKey::from_base64(key).context("invalid COURIER_SECRET_KEY")?;
        }
        Ok(settings)
    }

    /// The master key, which every command that touches webhook secrets needs.
    pub fn master_key(&self) -> anyhow::Result<courier_core::MasterKey> {
        let text = self.api.secret_key.as_deref().context("COURIER_SECRET_KEY is required (base64 of 32 bytes)")?;
        Ok(courier_core::MasterKey::from_base64(text)?)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn with_env(pairs: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Settings::from_sources(None, |name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_design() {
        let s = with_env(&[]).expect("defaults are valid");
        assert_eq!(s.api.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.delivery.retry, RetryPolicy::default());
        assert_eq!(s.delivery.timeout, Duration::from_secs(15));
        assert_eq!(s.delivery.connect_timeout, Duration::from_secs(5));
        assert_eq!(s.delivery.max_attempts, 5);
        assert!(s.database.url.is_none());
        assert!(!s.api.allow_http);
        assert_eq!(s.lifecycle.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(s.delivery.per_tenant_concurrency, 256 - 64);
    }

    #[test]
    fn environment_overrides_and_durations_parse() {
        let s = with_env(&[
            ("COURIER_RETRY_INITIAL", "50ms"),
            ("COURIER_DELIVERY_TIMEOUT", "2s"),
            ("COURIER_ALLOWED_TARGETS", "127.0.0.0/8, ::1/128"),
            ("COURIER_ALLOW_HTTP", "true"),
            ("DATABASE_URL", "postgres://x@127.0.0.1/db"),
        ])
        .expect("valid");
        assert_eq!(s.delivery.retry.initial, Duration::from_millis(50));
        assert_eq!(s.delivery.timeout, Duration::from_secs(2));
        assert_eq!(s.delivery.allowed_targets.len(), 2);
        assert!(s.api.allow_http);
        assert_eq!(s.database.url.as_deref(), Some("postgres://x@127.0.0.1/db"));
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (var, value) in [
            ("COURIER_RETRY_INITIAL", "soon"),
            ("COURIER_LISTEN", "nowhere"),
            ("COURIER_ALLOWED_TARGETS", "10.0.0.0/33"),
            ("COURIER_MAX_ATTEMPTS", "26"),
            ("COURIER_SECRET_KEY", "dG9vIHNob3J0"),
            ("COURIER_DELIVERY_TIMEOUT", "0s"),
            ("COURIER_LOG_FORMAT", "xml"),
            ("COURIER_SHUTDOWN_TIMEOUT", "10ms"),
            ("COURIER_TENANT_CONCURRENCY", "0"),
        ] {
            let err = with_env(&[(var, value)]).expect_err(var);
            assert!(format!("{err:#}").contains(var), "{var}: {err:#}");
        }
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let s = with_env(&[
            ("DATABASE_URL", "postgres://courier:hunter2@127.0.0.1:5432/courier"),
            ("COURIER_SECRET_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        ])
        .expect("valid");
        let text = format!("{s:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("AAAAAAAAAAAA"), "{text}");
        assert!(text.contains("[redacted]") && text.contains("127.0.0.1:5432"), "{text}");
    }

    #[test]
    fn otlp_endpoints_follow_the_opentelemetry_variables() {
        assert_eq!(with_env(&[]).expect("valid").log.otlp_traces_endpoint, None);
        let base = with_env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")]).expect("valid");
        assert_eq!(base.log.otlp_traces_endpoint.as_deref(), Some("http://127.0.0.1:4318/v1/traces"));
        let signal = with_env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:9999/traces"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ])
        .expect("valid");
        assert_eq!(signal.log.otlp_traces_endpoint.as_deref(), Some("http://collector:9999/traces"));
        for (var, value) in [("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4317"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]
        {
            let mut env = vec![(var, value)];
            if var == "OTEL_EXPORTER_OTLP_PROTOCOL" {
                env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"));
            }
            let err = with_env(&env).expect_err(var);
            assert!(format!("{err:#}").contains(var), "{var}: {err:#}");
        }
    }

    #[test]
    fn file_sits_between_defaults_and_environment() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(file, "retry_initial = \"2s\"\nmax_attempts = 7\nallowed_targets = [\"10.0.0.0/8\"]")
            .expect("written");
        let s = Settings::from_sources(Some(file.path()), |_| None).expect("valid");
        assert_eq!(s.delivery.retry.initial, Duration::from_secs(2));
        assert_eq!(s.delivery.max_attempts, 7);
        assert_eq!(s.delivery.allowed_targets.len(), 1);
        let s = Settings::from_sources(Some(file.path()), |n| (n == "COURIER_MAX_ATTEMPTS").then(|| "3".to_owned()))
            .expect("valid");
        assert_eq!(s.delivery.max_attempts, 3);

        let mut bad = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(bad, "retry_intial = \"2s\"").expect("written");
        let err = Settings::from_sources(Some(bad.path()), |_| None).expect_err("typo refused");
        assert!(err.to_string().contains("retry_intial"), "{err}");
    }
}

#[cfg(test)]
mod defaults_file {
    use super::*;

    #[test]
    fn the_documented_defaults_file_is_valid_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/courier.toml");
        let from_file = Settings::from_sources(Some(&path), |_| None).expect("config/courier.toml is valid");
        let defaults = Settings::from_sources(None, |_| None).expect("defaults are valid");
        assert_eq!(format!("{from_file:?}"), format!("{defaults:?}"));
    }
}

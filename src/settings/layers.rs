//! The raw layers under the typed settings: every setting's name and default, the TOML file and the environment,
//! and the small parsers whose errors name the variable.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

/// The raw layered values, by setting name, and which names the sections read: [`SETTINGS`] is the one list of
/// settings, so a setting declared and never read, or read and never declared, is a bug every test run finds.
pub(super) struct Layers {
    values: BTreeMap<&'static str, (String, &'static str)>,
    read: std::cell::RefCell<std::collections::BTreeSet<String>>,
}

/// Every setting: its name and default. The environment variable is `COURIER_` + upper case, except `database_url`.
pub(super) const SETTINGS: &[(&str, Option<&str>)] = &[
    ("database_url", None),
    ("database_max_connections", Some("20")),
    ("read_database_url", Some("")),
    ("read_max_lag", Some("5s")),
    ("listen", Some("127.0.0.1:8080")),
    ("metrics_listen", Some("127.0.0.1:9090")),
    ("secret_key", None),
    ("allow_http", Some("false")),
    ("relay_live", Some("false")),
    ("rotation_grace", Some("24h")),
    ("rate_limit", Some("1000")),
    ("rate_limit_burst", Some("2000")),
    ("max_webhooks", Some("100")),
    ("max_running_replays", Some("3")),
    ("api_statement_timeout", Some("5s")),
    ("public_url", Some("")),
    ("portal_frame_ancestors", Some("'none'")),
    ("allowed_targets", Some("")),
    ("trusted_proxies", Some("")),
    ("retry_initial", Some("30s")),
    ("retry_multiplier", Some("4")),
    ("retry_cap", Some("24h")),
    ("retry_jitter", Some("0.2")),
    ("max_attempts", Some("5")),
    ("delivery_timeout", Some("15s")),
    ("connect_timeout", Some("5s")),
    ("poll_interval", Some("1s")),
    ("worker_concurrency", Some("256")),
    ("webhook_concurrency", Some("64")),
    ("tenant_concurrency", Some("")),
    ("disable_after", Some("5d")),
    ("disable_min_failures", Some("10")),
    ("retention", Some("30d")),
    ("ingest_kafka_brokers", Some("")),
    ("ingest_kafka_topics", Some("")),
    ("ingest_kafka_group", Some("courier")),
    ("ingest_kafka_tls", Some("false")),
    ("ingest_kafka_sasl_mechanism", Some("")),
    ("ingest_kafka_sasl_username", Some("")),
    ("ingest_kafka_sasl_password", Some("")),
    ("shutdown_timeout", Some("30s")),
    ("log_format", Some("pretty")),
    ("otel_exporter_otlp_endpoint", None),
    ("otel_exporter_otlp_traces_endpoint", None),
    ("otel_exporter_otlp_protocol", None),
    ("otel_service_name", Some("courier")),
];

/// `COURIER_<NAME>`, except for settings whose variables are someone else's standard.
pub(super) fn env_name(name: &str) -> String {
    if name == "database_url" || name.starts_with("otel_") {
        name.to_uppercase()
    } else {
        format!("COURIER_{}", name.to_uppercase())
    }
}

impl Layers {
    pub(super) fn get(&self, name: &str) -> Option<&(String, &'static str)> {
        debug_assert!(SETTINGS.iter().any(|(n, _)| *n == name), "`{name}` is not in SETTINGS");
        self.read.borrow_mut().insert(name.to_owned());
        self.values.get(name)
    }

    /// Settings of [`SETTINGS`] that no section read.
    pub(super) fn unread(&self) -> Vec<&'static str> {
        let read = self.read.borrow();
        SETTINGS.iter().map(|(name, _)| *name).filter(|name| !read.contains(*name)).collect()
    }

    pub(super) fn parse<T>(&self, name: &str, parse: impl FnOnce(&str) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let (value, source) = self.get(name).with_context(|| format!("{} is required", env_name(name)))?;
        parse(value).with_context(|| format!("invalid {} (from {source}): `{value}`", env_name(name)))
    }
}

pub(super) fn otlp_traces_endpoint(l: &Layers) -> anyhow::Result<Option<String>> {
    // Checked even without an endpoint: a protocol Courier cannot speak is refused, not silently ignored.
    if let Some((protocol, source)) = l.get("otel_exporter_otlp_protocol")
        && protocol.trim() != "http/protobuf"
    {
        bail!(
            "invalid OTEL_EXPORTER_OTLP_PROTOCOL (from {source}): `{protocol}`: Courier exports over http/protobuf \
             only (a collector's port 4318)"
        );
    }
    let set = |name| l.get(name).map(|(v, _)| v.trim().to_owned()).filter(|v| !v.is_empty());
    let endpoint = match (set("otel_exporter_otlp_traces_endpoint"), set("otel_exporter_otlp_endpoint")) {
        (Some(traces), _) => ("otel_exporter_otlp_traces_endpoint", traces),
        (None, Some(base)) => ("otel_exporter_otlp_endpoint", format!("{}/v1/traces", base.trim_end_matches('/'))),
        (None, None) => return Ok(None),
    };
    let (name, url) = endpoint;
    l.parse(name, |_| {
        let parsed = url::Url::parse(&url)?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("an OTLP/HTTP endpoint is an http or https URL");
        }
        Ok(Some(url.clone()))
    })
}

pub(super) fn duration(s: &str) -> anyhow::Result<Duration> {
    Ok(humantime::parse_duration(s.trim())?)
}

/// A duration parser that refuses anything shorter than `min`.
pub(super) fn at_least(min: Duration) -> impl Fn(&str) -> anyhow::Result<Duration> {
    move |s| {
        let d = duration(s)?;
        if d < min {
            bail!("must be at least {}", humantime::format_duration(min));
        }
        Ok(d)
    }
}

pub(super) fn boolean(s: &str) -> anyhow::Result<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => bail!("expected true or false"),
    }
}

pub(super) fn positive<T: std::str::FromStr + PartialOrd + Default>(s: &str) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let v: T = s.trim().parse()?;
    if v <= T::default() {
        bail!("must be greater than zero");
    }
    Ok(v)
}

impl Layers {
    /// Defaults, then the optional TOML file, then `env`.
    pub(super) fn load(file: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let mut layers = Layers { values: BTreeMap::new(), read: Default::default() };
        for (name, default) in SETTINGS {
            if let Some(default) = default {
                layers.values.insert(name, ((*default).to_owned(), "default"));
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
                layers.values.insert(name, (text, "config file"));
            }
        }
        for (name, _) in SETTINGS {
            if let Some(value) = env(&env_name(name)) {
                layers.values.insert(name, (value, "environment"));
            }
        }
        Ok(layers)
    }
}

//! Each section of the settings tree from the layers, validated; an error names the variable and where it came from.

use std::time::Duration;

use anyhow::{Context, bail};
use courier_core::RetryPolicy;
use ipnet::IpNet;
use secrecy::SecretString;

use super::layers::{Layers, at_least, boolean, duration, otlp_traces_endpoint, positive};
use super::{
    ApiSettings, DatabaseSettings, DatabaseUrl, DeliverySettings, LifecycleSettings, LogFormat, LogSettings,
    RetentionSettings,
};

/// A setting whose empty value means unset.
fn optional(l: &Layers, name: &str) -> Option<String> {
    l.get(name).map(|(v, _)| v.clone()).filter(|v| !v.is_empty())
}

impl DatabaseSettings {
    pub(super) fn from_layers(l: &Layers) -> anyhow::Result<Self> {
        Ok(Self {
            url: optional(l, "database_url").map(DatabaseUrl),
            max_connections: l.parse("database_max_connections", positive)?,
            read_url: optional(l, "read_database_url").map(DatabaseUrl),
            read_max_lag: l.parse("read_max_lag", at_least(Duration::from_millis(100)))?,
        })
    }
}

impl ApiSettings {
    pub(super) fn from_layers(l: &Layers) -> anyhow::Result<Self> {
        let rate: f64 = l.parse("rate_limit", |s| {
            let r: f64 = s.trim().parse()?;
            if !(r >= 0.0 && r.is_finite()) {
                bail!("must be zero (off) or a positive number of requests per second");
            }
            Ok(r)
        })?;
        let burst: f64 = l.parse("rate_limit_burst", positive)?;
        let listen: std::net::SocketAddr = l.parse("listen", |s| Ok(s.trim().parse()?))?;
        Ok(Self {
            listen,
            public_url: l.parse("public_url", |s| public_url(s, listen))?,
            portal_frame_ancestors: l.parse("portal_frame_ancestors", frame_ancestors)?,
            metrics_listen: l.parse("metrics_listen", |s| match s.trim() {
                "" => Ok(None),
                addr => Ok(Some(addr.parse()?)),
            })?,
            secret_key: optional(l, "secret_key").map(SecretString::from),
            allow_http: l.parse("allow_http", boolean)?,
            relay_live: l.parse("relay_live", boolean)?,
            rotation_grace: l.parse("rotation_grace", duration)?,
            rate_limit: (rate > 0.0).then_some((rate, burst.max(1.0))),
            trusted_proxies: l.parse("trusted_proxies", cidrs)?,
            max_webhooks: l.parse("max_webhooks", positive)?,
            max_running_replays: l.parse("max_running_replays", positive)?,
            statement_timeout: l.parse("api_statement_timeout", at_least(Duration::from_millis(10)))?,
        })
    }
}

/// A comma-separated list of CIDRs (`10.0.0.0/8, 2001:db8::/32`); empty is none.
fn cidrs(s: &str) -> anyhow::Result<Vec<IpNet>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<IpNet>().with_context(|| format!("`{p}` is not a CIDR")))
        .collect()
}

/// An `http(s)` base without query or fragment; empty means the listen address.
fn public_url(s: &str, listen: std::net::SocketAddr) -> anyhow::Result<url::Url> {
    let text = s.trim();
    let url = if text.is_empty() { url::Url::parse(&format!("http://{listen}/"))? } else { url::Url::parse(text)? };
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        bail!("must be an http or https URL, e.g. https://courier.example.com");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("must not have a query or a fragment");
    }
    Ok(url)
}

/// CSP source expressions, space-separated: nothing that could end the directive or the header.
/// Checked before anything is trimmed, so a line break cannot slip into the header.
fn frame_ancestors(s: &str) -> anyhow::Result<String> {
    let allowed = |c: char| c == ' ' || (c.is_ascii_graphic() && !matches!(c, ';' | ',' | '"' | '\\'));
    let sources: Vec<&str> = s.split(' ').filter(|t| !t.is_empty()).collect();
    let none_alone = !sources.contains(&"'none'") || sources.len() == 1;
    if sources.is_empty() || !s.chars().all(allowed) || !none_alone {
        bail!("must be CSP frame-ancestors sources separated by spaces, e.g. 'none' or https://studio.example.com");
    }
    Ok(sources.join(" "))
}

fn retry_policy(l: &Layers) -> anyhow::Result<RetryPolicy> {
    Ok(RetryPolicy {
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
    })
}

impl DeliverySettings {
    pub(super) fn from_layers(l: &Layers) -> anyhow::Result<Self> {
        let timeout = l.parse("delivery_timeout", duration)?;
        if timeout.is_zero() {
            bail!("invalid COURIER_DELIVERY_TIMEOUT: must be greater than zero");
        }
        let concurrency = l.parse("worker_concurrency", positive)?;
        let per_webhook = l.parse("webhook_concurrency", positive)?;
        Ok(Self {
            allowed_targets: l.parse("allowed_targets", cidrs)?,
            retry: retry_policy(l)?,
            max_attempts: l.parse("max_attempts", |s| {
                let n: u32 = s.trim().parse()?;
                if !(1..=25).contains(&n) {
                    bail!("must be between 1 and 25");
                }
                Ok(n)
            })?,
            timeout,
            connect_timeout: l.parse("connect_timeout", duration)?,
            poll_interval: l.parse("poll_interval", at_least(Duration::from_millis(10)))?,
            concurrency,
            per_webhook_concurrency: per_webhook,
            per_tenant_concurrency: l.parse("tenant_concurrency", |s| match s.trim() {
                "" => Ok(courier_worker::WorkerConfig::default_per_tenant(concurrency, per_webhook)),
                _ => positive(s),
            })?,
            disable_after: l.parse("disable_after", duration)?,
            disable_min_failures: l.parse("disable_min_failures", positive)?,
        })
    }
}

impl RetentionSettings {
    pub(super) fn from_layers(l: &Layers) -> anyhow::Result<Self> {
        Ok(Self {
            days: l.parse("retention", |s| {
                let days = duration(s)?.as_secs() / 86_400;
                if days == 0 {
                    bail!("must be at least one day");
                }
                Ok(u32::try_from(days)?)
            })?,
        })
    }
}

impl LifecycleSettings {
    pub(super) fn from_layers(l: &Layers) -> anyhow::Result<Self> {
        Ok(Self { shutdown_timeout: l.parse("shutdown_timeout", at_least(Duration::from_secs(1)))? })
    }
}

impl LogSettings {
    pub(super) fn from_layers(l: &Layers) -> anyhow::Result<Self> {
        Ok(Self {
            format: l.parse("log_format", |s| match s.trim() {
                "pretty" => Ok(LogFormat::Pretty),
                "json" => Ok(LogFormat::Json),
                _ => bail!("expected `pretty` or `json`"),
            })?,
            otlp_traces_endpoint: otlp_traces_endpoint(l)?,
            service_name: optional(l, "otel_service_name").unwrap_or_else(|| "courier".to_owned()),
        })
    }
}

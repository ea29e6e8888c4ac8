//! Webhook URL rules at creation (DESIGN.md §3.2, §4): absolute http(s), no credentials, at most 2,048 bytes,
//! `https` for live keys unless allowed, and no private targets unless listed.
//!
//! Host names are not resolved here (that would make creation depend on DNS); the worker's connect-time guard
//! vets every address a name resolves to. Names that are local by definition are refused outright.

use std::net::IpAddr;

use courier_core::Environment;
use courier_core::target::TargetPolicy;

use crate::error::ApiError;
use crate::state::WebhookRules;

pub const MAX_URL_LEN: usize = 2048;

fn local_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || [".localhost", ".local", ".internal", ".localdomain", ".home.arpa"]
            .iter()
            .any(|suffix| host.ends_with(suffix))
}

/// The normalised URL, or a 422 naming `field`.
pub fn validate_url(
    field: &str,
    raw: &str,
    environment: Environment,
    rules: &WebhookRules,
) -> Result<String, ApiError> {
    let invalid = |message: &str| ApiError::invalid(field, message);
    if raw.len() > MAX_URL_LEN {
        return Err(invalid("must be at most 2048 bytes"));
    }
    let url = url::Url::parse(raw.trim()).map_err(|e| invalid(&format!("not an absolute URL ({e})")))?;
    match url.scheme() {
        "https" => {}
        "http" if environment == Environment::Test || rules.allow_http => {}
        "http" => return Err(invalid("live-mode webhooks must use https")),
        _ => return Err(invalid("the scheme must be http or https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not contain credentials"));
    }
    let policy = TargetPolicy::new(rules.allowed_targets.clone());
    match url.host() {
        None => return Err(invalid("must have a host")),
        Some(url::Host::Ipv4(ip)) if !policy.permits(IpAddr::V4(ip)) => {
            return Err(invalid("targets a private or reserved address"));
        }
        Some(url::Host::Ipv6(ip)) if !policy.permits(IpAddr::V6(ip)) => {
            return Err(invalid("targets a private or reserved address"));
        }
        Some(url::Host::Domain(name)) if local_name(name) => {
            let loopback_allowed = policy.permits(IpAddr::from([127, 0, 0, 1]));
            if !loopback_allowed {
                return Err(invalid("targets a local host name"));
            }
        }
        Some(_) => {}
    }
    // Normalising can make a URL longer (an IDN host becomes punycode, unsafe bytes become %XX): the stored form
    // is what the limit and the column's CHECK hold to.
    let normalised = url.to_string();
    if normalised.len() > MAX_URL_LEN {
        return Err(invalid("must be at most 2048 bytes once normalised"));
    }
    Ok(normalised)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(allow_http: bool, allowed: &[&str]) -> WebhookRules {
        WebhookRules {
            allow_http,
            allowed_targets: allowed.iter().map(|c| c.parse().expect("cidr")).collect(),
            rotation_grace: Duration::from_secs(1),
            default_max_attempts: 5,
            max_webhooks: 100,
        }
    }

    #[test]
    fn enforces_the_rules() {
        let strict = config(false, &[]);
        let live = Environment::Live;
        assert!(validate_url("url", "https://example.com/hook", live, &strict).is_ok());
        for bad in [
            "not a url",
            "/relative",
            "ftp://example.com/",
            "http://example.com/",
            "https://user:pw@example.com/",
            "https://10.0.0.1/",
            "https://[::1]/",
            "https://169.254.169.254/latest",
            "https://localhost/",
            "https://db.internal/",
        ] {
            assert!(validate_url("url", bad, live, &strict).is_err(), "{bad} must be refused");
        }
        assert!(validate_url("url", &format!("https://example.com/{}", "a".repeat(2048)), live, &strict).is_err());
        assert!(validate_url("url", "http://example.com/", Environment::Test, &strict).is_ok());
        assert!(validate_url("url", "http://example.com/", live, &config(true, &[])).is_ok());
        let dev = config(true, &["127.0.0.0/8"]);
        assert!(validate_url("url", "http://127.0.0.1:9000/hook", live, &dev).is_ok());
        assert!(validate_url("url", "http://localhost:9000/hook", live, &dev).is_ok());
        assert!(validate_url("url", "http://10.0.0.1/", live, &dev).is_err());
    }
}

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
    check_host(&url, rules).map_err(invalid)?;
    // Normalising can make a URL longer (an IDN host becomes punycode, unsafe bytes become %XX): the stored form
    // is what the limit and the column's CHECK hold to.
    let normalised = url.to_string();
    if normalised.len() > MAX_URL_LEN {
        return Err(invalid("must be at most 2048 bytes once normalised"));
    }
    Ok(normalised)
}

/// The SSRF rules for a URL's host at creation: IP literals in a forbidden range and names that are local by
/// definition are refused, unless the operator allowed them. Names are resolved by the worker, at connect time.
fn check_host(url: &url::Url, rules: &WebhookRules) -> Result<(), &'static str> {
    let policy = TargetPolicy::new(rules.allowed_targets.clone());
    match url.host() {
        None => Err("must have a host"),
        Some(url::Host::Ipv4(ip)) if !policy.permits(IpAddr::V4(ip)) => Err("targets a private or reserved address"),
        Some(url::Host::Ipv6(ip)) if !policy.permits(IpAddr::V6(ip)) => Err("targets a private or reserved address"),
        // A URL of another scheme than http(s) (a broker's) keeps its host as a name: read it as an http host
        // would be, so every IPv4 form (`127.1`, `0x7f.1`, `2130706433`) is judged as the address it is.
        Some(url::Host::Domain(name)) if literal_of(name).is_some_and(|ip| !policy.permits(ip)) => {
            Err("targets a private or reserved address")
        }
        Some(url::Host::Domain(name)) if local_name(name) && !policy.permits(IpAddr::from([127, 0, 0, 1])) => {
            Err("targets a local host name")
        }
        Some(_) => Ok(()),
    }
}

/// A broker URL's path, query and fragment: only the user and password are masked, so nothing else may carry a
/// secret, and the path names only what the broker's URL scheme gives it (a Redis database, a RabbitMQ vhost).
fn check_broker_rest(kind: &str, url: &url::Url) -> Result<(), &'static str> {
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must have no query or fragment");
    }
    let path = url.path().trim_start_matches('/');
    match kind {
        "redis" if !path.is_empty() && path.parse::<u16>().is_err() => {
            Err("the path names a Redis database by number (/0)")
        }
        "nats" if !path.is_empty() => Err("must have no path"),
        "rabbitmq" if path.contains('/') => Err("the path names one virtual host (/%2F is `/`)"),
        _ => Ok(()),
    }
}

/// The address a host name written as an IP literal stands for, in any of the forms an http URL accepts.
fn literal_of(name: &str) -> Option<IpAddr> {
    match url::Host::parse(name).ok()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// Checks a broker destination (`destination.<field>` in a 422) and returns its URL with credentials masked, the
/// form every response and log shows. A live-mode broker is reached over TLS (`rediss://`, `tls://`, `amqps://`)
/// unless `COURIER_ALLOW_HTTP` is set, as a live-mode URL is `https`: credentials would otherwise cross the network
/// in the clear.
pub fn validate_broker(
    broker: &courier_core::Broker,
    environment: Environment,
    rules: &WebhookRules,
) -> Result<String, ApiError> {
    let invalid = |field: &str, message: &str| ApiError::invalid(format!("destination.{field}"), message);
    if let Some((field, message)) = broker.invalid_field() {
        return Err(invalid(field, &message));
    }
    if let courier_core::Broker::Kafka(kafka) = broker {
        return validate_kafka(kafka, environment, rules);
    }
    let Some(raw) = broker.url() else {
        // A relay: `courier listen` connects to Courier, Courier dials nothing.
        if environment == Environment::Live && !rules.relay_live {
            return Err(invalid(
                "type",
                "relay webhooks are for test-mode keys (COURIER_RELAY_LIVE opens them to live mode)",
            ));
        }
        return Ok(courier_core::destination::RELAY_URL.to_owned());
    };
    if raw.len() > MAX_URL_LEN {
        return Err(invalid("url", "must be at most 2048 bytes"));
    }
    let mut url = url::Url::parse(raw.trim()).map_err(|e| invalid("url", &format!("not an absolute URL ({e})")))?;
    let schemes = broker.schemes();
    if url.scheme() != schemes.plain && url.scheme() != schemes.tls {
        let (kind, plain, tls) = (broker.kind(), schemes.plain, schemes.tls);
        return Err(invalid("url", &format!("a {kind} destination's URL starts with {tls}:// (TLS) or {plain}://")));
    }
    if url.scheme() == schemes.plain && environment == Environment::Live && !rules.allow_http {
        return Err(invalid(
            "url",
            &format!("live-mode broker destinations use TLS ({}://) unless COURIER_ALLOW_HTTP is set", schemes.tls),
        ));
    }
    check_host(&url, rules).map_err(|message| invalid("url", message))?;
    check_broker_rest(broker.kind(), &url).map_err(|message| invalid("url", message))?;
    // A password is masked; a user name without a password is a NATS token, masked too.
    let mask = courier_core::destination::MASK;
    if url.password().is_some() {
        let _ = url.set_password(Some(mask));
    } else if !url.username().is_empty() {
        let _ = url.set_username(mask);
    }
    let masked = url.to_string();
    if masked.len() > MAX_URL_LEN {
        return Err(invalid("url", "must be at most 2048 bytes once its credentials are masked"));
    }
    Ok(masked)
}

/// A Kafka destination's brokers by the URL rules (each `host:port` as a URL's host would be judged), TLS in live
/// mode unless plain text is allowed; its form for the URL column.
fn validate_kafka(
    kafka: &courier_core::destination::KafkaTopic,
    environment: Environment,
    rules: &WebhookRules,
) -> Result<String, ApiError> {
    let invalid = |field: &str, message: &str| ApiError::invalid(format!("destination.{field}"), message);
    if !kafka.tls && environment == Environment::Live && !rules.allow_http {
        return Err(invalid(
            "tls",
            "live-mode Kafka destinations use TLS (`\"tls\": true`) unless COURIER_ALLOW_HTTP is set",
        ));
    }
    for broker in &kafka.brokers {
        let url = url::Url::parse(&format!("kafka://{broker}")).map_err(|e| invalid("brokers", &e.to_string()))?;
        check_host(&url, rules).map_err(|message| invalid("brokers", &format!("{broker}: {message}")))?;
    }
    let shown = kafka.shown_url();
    if shown.len() > MAX_URL_LEN {
        return Err(invalid("brokers", "the brokers and topic must be at most 2048 bytes together"));
    }
    Ok(shown)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(allow_http: bool, allowed: &[&str]) -> WebhookRules {
        WebhookRules {
            allow_http,
            relay_live: false,
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

    #[test]
    fn live_mode_brokers_use_tls_unless_plain_text_is_allowed() {
        use courier_core::destination::{Broker, NatsSubject, RabbitExchange, RedisStream};
        let redis = |url: &str| Broker::Redis(RedisStream { url: url.into(), stream: "calls".into(), maxlen: None });
        let nats =
            |url: &str| Broker::Nats(NatsSubject { url: url.into(), subject: "calls".into(), credentials: None });
        let rabbit = |url: &str| {
            Broker::Rabbitmq(RabbitExchange { url: url.into(), exchange: "x".into(), routing_key: "k".into() })
        };
        let (strict, open) = (config(false, &[]), config(true, &[]));
        let (live, test) = (Environment::Live, Environment::Test);
        for tls in [redis("rediss://:pw@example.com"), nats("tls://example.com"), rabbit("amqps://example.com/")] {
            assert!(validate_broker(&tls, live, &strict).is_ok(), "{tls:?}");
        }
        for plain in [redis("redis://:pw@example.com"), nats("nats://example.com"), rabbit("amqp://example.com/")] {
            let refused = validate_broker(&plain, live, &strict).expect_err("plain text in live mode");
            assert!(format!("{refused:?}").contains("use TLS"), "{refused:?}");
            assert!(validate_broker(&plain, test, &strict).is_ok(), "{plain:?} in test mode");
            assert!(validate_broker(&plain, live, &open).is_ok(), "{plain:?} with COURIER_ALLOW_HTTP");
        }
        let kafka = |brokers: &[&str], tls| {
            let brokers = brokers.iter().map(|b| (*b).to_owned()).collect();
            let key = courier_core::destination::kafka::KafkaKey::CallId;
            Broker::Kafka(courier_core::destination::KafkaTopic { brokers, topic: "t".into(), key, sasl: None, tls })
        };
        assert!(validate_broker(&kafka(&["kafka.example.com:9093"], true), live, &strict).is_ok());
        assert!(validate_broker(&kafka(&["kafka.example.com:9092"], false), live, &strict).is_err());
        assert!(validate_broker(&kafka(&["kafka.example.com:9092"], false), test, &strict).is_ok());
        for private in ["10.0.0.1:9092", "127.1:9092", "localhost:9092", "[::1]:9092"] {
            let refused = validate_broker(&kafka(&["kafka.example.com:9092", private], false), test, &strict);
            assert!(format!("{refused:?}").contains("destination.brokers"), "{private}: {refused:?}");
        }
        for crossed in [redis("amqps://example.com/"), nats("rediss://example.com"), rabbit("https://example.com/")] {
            assert!(validate_broker(&crossed, test, &open).is_err(), "{crossed:?}");
        }
    }
}

//! The settings tree against its sources: defaults, file, environment, and the documented defaults file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use courier_core::RetryPolicy;

use super::*;

mod parsing {
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
        assert_eq!(s.database.url.as_ref().map(|u| u.expose()), Some("postgres://x@127.0.0.1/db"));
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
            ("COURIER_PUBLIC_URL", "ftp://courier.example.com"),
            ("COURIER_PUBLIC_URL", "https://courier.example.com/?next=evil"),
            ("COURIER_PORTAL_FRAME_ANCESTORS", "https://a.example; script-src *"),
            ("COURIER_PORTAL_FRAME_ANCESTORS", "https://a.example\r\nSet-Cookie: x=1"),
            ("COURIER_PORTAL_FRAME_ANCESTORS", "'none' https://a.example"),
        ] {
            let err = with_env(&[(var, value)]).expect_err(var);
            assert!(format!("{err:#}").contains(var), "{var}: {err:#}");
        }
    }

    #[test]
    fn portal_links_follow_the_public_url() {
        let local = with_env(&[("COURIER_LISTEN", "127.0.0.1:9999")]).expect("valid").api_config();
        assert_eq!(local.portal.public_url, "http://127.0.0.1:9999");
        assert!(!local.portal.secure_cookie);
        assert_eq!(local.portal.frame_ancestors, "'none'");
        let public = with_env(&[
            ("COURIER_PUBLIC_URL", "https://courier.example.com/"),
            ("COURIER_PORTAL_FRAME_ANCESTORS", "  https://studio.example.com   'self' "),
        ])
        .expect("valid")
        .api_config();
        assert_eq!(public.portal.public_url, "https://courier.example.com");
        assert!(public.portal.secure_cookie, "an https base marks the cookie Secure");
        assert_eq!(public.portal.frame_ancestors, "https://studio.example.com 'self'");
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
        assert!(text.contains("[REDACTED]") && text.contains("127.0.0.1:5432"), "{text}");
        // Several hosts, and replicas: no URL to the `url` crate, still redacted.
        let s = with_env(&[
            ("DATABASE_URL", "postgres://courier:hunter2@db1:5432,db2:5432/courier?target_session_attrs=read-write"),
            ("COURIER_READ_DATABASE_URL", "postgres://reader:swordfish@db3,db4/courier"),
        ])
        .expect("valid");
        let text = format!("{s:?}");
        assert!(!text.contains("hunter2") && !text.contains("swordfish"), "{text}");
        assert!(text.contains("courier:redacted@db1:5432,db2:5432/courier"), "{text}");
        assert!(text.contains("reader:redacted@db3,db4/courier"), "{text}");
        // Kafka ingest's SASL password, and its user name.
        let s = with_env(&[
            ("COURIER_INGEST_KAFKA_BROKERS", "kafka-1:9092"),
            ("COURIER_INGEST_KAFKA_TOPICS", "agent-studio.events"),
            ("COURIER_INGEST_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("COURIER_INGEST_KAFKA_SASL_USERNAME", "studio-reader"),
            ("COURIER_INGEST_KAFKA_SASL_PASSWORD", "k4fka-pw"),
        ])
        .expect("valid");
        let text = format!("{s:?}");
        assert!(!text.contains("k4fka-pw") && !text.contains("studio-reader"), "{text}");
        assert!(text.contains("ScramSha512") && text.contains("kafka-1:9092"), "{text}");
    }

    #[test]
    fn kafka_ingest_is_off_without_brokers_and_checks_what_it_is_given() {
        assert!(with_env(&[]).expect("valid").kafka_ingest.is_none());
        let brokers = ("COURIER_INGEST_KAFKA_BROKERS", "kafka-1:9092, kafka-2:9092");
        let on = with_env(&[brokers, ("COURIER_INGEST_KAFKA_TOPICS", "a,b")]).expect("valid").kafka_ingest;
        let on = on.expect("on");
        assert_eq!(
            (on.brokers.len(), on.topics, on.group.as_str()),
            (2, vec!["a".to_owned(), "b".to_owned()], "courier")
        );
        for bad in [
            vec![brokers],
            vec![("COURIER_INGEST_KAFKA_BROKERS", "kafka-1"), ("COURIER_INGEST_KAFKA_TOPICS", "a")],
            vec![brokers, ("COURIER_INGEST_KAFKA_TOPICS", "a"), ("COURIER_INGEST_KAFKA_SASL_MECHANISM", "GSSAPI")],
            vec![brokers, ("COURIER_INGEST_KAFKA_TOPICS", "a"), ("COURIER_INGEST_KAFKA_SASL_MECHANISM", "PLAIN")],
        ] {
            assert!(with_env(&bad).is_err(), "{bad:?}");
        }
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

mod documented {
    use std::path::Path;

    use super::layers::{SETTINGS, env_name};

    /// The README's configuration table: variable → default cell.
    fn readme_table() -> Vec<(String, String)> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
        let text = std::fs::read_to_string(path).expect("README.md");
        let section = text.split("## Configuration").nth(1).expect("a Configuration section");
        section
            .lines()
            .take_while(|l| !l.starts_with("## "))
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let variable = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                Some((variable.to_owned(), (*cells.get(2)?).to_owned()))
            })
            .collect()
    }

    /// A setting declared in `SETTINGS` that no section reads is found (every `Settings` load checks it).
    #[test]
    fn a_setting_no_section_reads_is_found() {
        let layers = super::super::layers::Layers::load(None, |_| None).expect("defaults");
        assert!(layers.get("listen").is_some());
        let unread = layers.unread();
        assert!(!unread.contains(&"listen") && unread.contains(&"retention"), "{unread:?}");
    }

    /// Each setting is spelled once, in `SETTINGS`; the README's table lists exactly those, each with the default
    /// `SETTINGS` gives it (a computed default says so in words), and `config/courier.toml` names each one.
    #[test]
    fn the_readme_and_the_defaults_file_list_every_setting_with_its_default() {
        let table = readme_table();
        let documented: Vec<&str> = table.iter().map(|(v, _)| v.as_str()).collect();
        let settings: Vec<String> = SETTINGS.iter().map(|(name, _)| env_name(name)).collect();
        assert_eq!(documented, settings, "the README's table, in SETTINGS' order");
        for ((variable, cell), (name, default)) in table.iter().zip(SETTINGS) {
            match default.filter(|d| !d.is_empty()) {
                Some(default) if cell.starts_with('`') => {
                    assert_eq!(cell.trim_matches('`'), default, "{variable}'s default in the README")
                }
                Some(default) => assert!(!cell.is_empty(), "{variable} documents its default ({default})"),
                None => assert!(cell != "`0`" && !cell.is_empty(), "{variable}: {cell}"),
            }
            let file = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/courier.toml"))
                .expect("config/courier.toml");
            assert!(file.lines().any(|l| l.trim_start_matches("# ").starts_with(&format!("{name} ="))), "{name}");
        }
    }
}

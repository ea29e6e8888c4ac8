//! `/metrics` after real deliveries: the counters moved by exactly what happened.
//! A test binary of its own, because the metrics recorder is process-wide.

// Shared with the main integration binary, which uses all of them; this one uses a part.
#[path = "it/app.rs"]
mod app;
#[allow(dead_code)]
#[path = "it/receiver.rs"]
mod receiver;

use app::spawn_app;

use std::time::Duration;

use courier_core::{Environment, Scope, Scopes};
use courier_store::{api_keys, tenants};
use receiver::{Receiver, Reply};
use sqlx::PgPool;

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{series} not in\n{text}"))
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn counters_move_by_what_happened(pool: PgPool) {
    let app = spawn_app(pool.clone(), "10ms").await;
    let base = app.base.clone();
    let tenant = tenants::create(&pool, "Acme").await.expect("tenant");
    let key =
        api_keys::create(&pool, tenant.id, Environment::Test, &Scopes::new(Scope::ALL)).await.expect("key").plaintext;
    let http = app.http();

    let receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script([Reply::Status(500)]);
    let res = http
        .post(format!("{base}/api/v1/webhooks"))
        .bearer_auth(&key)
        .body(serde_json::json!({"url": receiver.url}).to_string())
        .send()
        .await
        .expect("create");
    assert_eq!(res.status().as_u16(), 201);
    for (i, kind) in ["call.completed", "call.completed", "call.failed"].iter().enumerate() {
        let body = serde_json::json!({"id": format!("evt_m{i}"), "type": kind, "data": {"call_id": "c"}});
        let res = http
            .post(format!("{base}/api/v1/events"))
            .bearer_auth(&key)
            .body(body.to_string())
            .send()
            .await
            .expect("post");
        assert_eq!(res.status().as_u16(), 201);
    }
    // Three deliveries, one of which fails once first: four requests, counted once the recorder wrote them.
    let scrape = || async { http.get(format!("{}/metrics", app.metrics)).send().await.ok()?.text().await.ok() };
    let finished = r#"courier_deliveries_finished_total{outcome="succeeded"} 3"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape().await.unwrap_or_default();
        if text.lines().any(|l| l == finished) || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(receiver.received().len(), 4, "three deliveries, one retried once");

    let public = http.get(format!("{base}/metrics")).send().await.expect("answers");
    assert_eq!(public.status().as_u16(), 404, "/metrics is not on the public API port");
    assert_eq!(value(&text, r#"courier_events_ingested_total{type="call.completed"}"#), 2.0);
    assert_eq!(value(&text, r#"courier_events_ingested_total{type="call.failed"}"#), 1.0);
    assert_eq!(value(&text, r#"courier_deliveries_finished_total{outcome="succeeded"}"#), 3.0);
    assert_eq!(value(&text, r#"courier_attempts_total{outcome="succeeded",status_class="2xx"}"#), 3.0);
    assert_eq!(value(&text, r#"courier_attempts_total{outcome="retry",status_class="5xx"}"#), 1.0);
    assert_eq!(value(&text, "courier_attempt_duration_seconds_count"), 4.0);
    assert_eq!(value(&text, r#"courier_queue_depth{state="due"}"#), 0.0);
    assert_eq!(value(&text, "courier_deliveries_in_flight"), 0.0);
    assert!(
        text.contains(r#"courier_http_request_duration_seconds_count{route="/api/v1/events",status="201"} 3"#),
        "{text}"
    );

    app.shutdown().await;
}

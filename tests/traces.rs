//! OpenTelemetry export: a real OTLP/HTTP collector (in this process) receives the spans of an ingest request and of
//! the delivery attempts it caused, with their attributes, the request continuing the caller's `traceparent` and each
//! attempt linked to the request that created its delivery (ingest, then a replay).
//! A test binary of its own, because the tracing subscriber is process-wide.

#[path = "it/app.rs"]
mod app;
#[allow(dead_code)]
#[path = "it/receiver.rs"]
mod receiver;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use app::spawn_app;
use axum::body::Bytes;
use courier::settings::{LogFormat, LogSettings};
use courier_core::{Environment, Scope, Scopes};
use courier_store::{api_keys, tenants};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use receiver::{Receiver, Reply};
use serde_json::{Value, json};
use sqlx::PgPool;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const REPLAY_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

/// An OTLP/HTTP trace collector: decodes each export and keeps its spans.
async fn start_collector() -> (String, Arc<Mutex<Vec<Span>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let kept = kept.clone();
            async move {
                let export = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                let mut kept = kept.lock().expect("lock");
                for resource in export.resource_spans {
                    for scope in resource.scope_spans {
                        kept.extend(scope.spans);
                    }
                }
                // An empty ExportTraceServiceResponse.
                ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/v1/traces", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("collector serves") });
    (url, spans)
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let value = span.attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()?;
    Some(match value {
        Any::StringValue(s) => s.clone(),
        Any::IntValue(i) => i.to_string(),
        Any::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

// Long because one request is followed from its span through the queue to the attempt span that links to it.
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn spans_reach_the_collector_with_attributes_and_links(pool: PgPool) {
    let (collector, spans) = start_collector().await;
    let telemetry = courier::telemetry::init(&LogSettings {
        format: LogFormat::Json,
        otlp_traces_endpoint: Some(collector),
        service_name: "courier".to_owned(),
    })
    .expect("telemetry");

    let app = spawn_app(pool.clone(), "10ms").await;
    let base = app.base.clone();
    let http = app.http();
    let tenant = tenants::create(&pool, "Acme").await.expect("tenant");
    let key =
        api_keys::create(&pool, tenant.id, Environment::Test, &Scopes::new(Scope::ALL)).await.expect("key").plaintext;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let webhook: Value = http
        .post(format!("{base}/api/v1/webhooks"))
        .bearer_auth(&key)
        .body(json!({"url": receiver.url}).to_string())
        .send()
        .await
        .expect("create")
        .text()
        .await
        .map(|t| serde_json::from_str(&t).expect("json"))
        .expect("body");
    let webhook_id = webhook["id"].as_str().expect("webhook id").to_owned();

    let res = http
        .post(format!("{base}/api/v1/events"))
        .bearer_auth(&key)
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .header("x-request-id", "req-traced")
        .body(json!({"id": "evt_traced", "type": "call.completed", "data": {"call_id": "c1"}}).to_string())
        .send()
        .await
        .expect("ingest");
    assert_eq!(res.status().as_u16(), 201);
    let wait_for = |n: usize| {
        let receiver = &receiver;
        async move {
            for _ in 0..500 {
                if receiver.received().len() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("{n} deliveries did not arrive");
        }
    };
    wait_for(1).await;

    // Replay it from another trace: the new delivery's attempt links to the replay request instead. Handed over
    // in memory, the delivery is listed once its attempt's record is written, which may be just after it arrived.
    let mut first = None;
    for _ in 0..500 {
        let deliveries: Value = http
            .get(format!("{base}/api/v1/deliveries?webhook_id={webhook_id}"))
            .bearer_auth(&key)
            .send()
            .await
            .expect("list")
            .text()
            .await
            .map(|t| serde_json::from_str(&t).expect("json"))
            .expect("body");
        first = deliveries["data"][0]["id"].as_str().map(str::to_owned);
        if first.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = first.expect("the delivery is listed once its attempt is recorded");
    let res = http
        .post(format!("{base}/api/v1/deliveries/{first}/replay"))
        .bearer_auth(&key)
        .header("traceparent", format!("00-{REPLAY_TRACE}-{CALLER_SPAN}-01"))
        .send()
        .await
        .expect("replay");
    assert_eq!(res.status().as_u16(), 201, "{}", res.text().await.unwrap_or_default());
    wait_for(2).await;
    // An attempt's span has closed once its record is written: both deliveries have succeeded on record.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'succeeded'")
            .fetch_one(&pool)
            .await
            .expect("count");
        if done == 2 || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.shutdown().await;
    // Flushing blocks on the exporter's thread, which sends to the collector served by this runtime.
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await.expect("flushed");

    let spans = spans.lock().expect("lock").clone();
    let ingest = named(&spans, "POST /api/v1/events");
    assert_eq!(ingest.len(), 1, "one ingest request span in {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>());
    let ingest = ingest[0];
    assert_eq!(hex(&ingest.trace_id), CALLER_TRACE, "the request continues the caller's trace");
    assert_eq!(hex(&ingest.parent_span_id), CALLER_SPAN);
    assert_eq!(ingest.kind, SpanKind::Server as i32);
    assert_eq!(attr(ingest, "route").as_deref(), Some("/api/v1/events"));
    assert_eq!(attr(ingest, "status").as_deref(), Some("201"));
    assert_eq!(attr(ingest, "request_id").as_deref(), Some("req-traced"));
    assert_eq!(attr(ingest, "tenant"), Some(tenant.id.to_string()));

    let replay = named(&spans, "POST /api/v1/deliveries/{id}/replay");
    assert_eq!(replay.len(), 1);
    assert_eq!(hex(&replay[0].trace_id), REPLAY_TRACE);

    let mut attempts = named(&spans, "delivery_attempt");
    assert_eq!(attempts.len(), 2, "one span per attempt");
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    for (attempt, cause) in attempts.iter().zip([ingest, replay[0]]) {
        assert_eq!(attempt.kind, SpanKind::Client as i32);
        assert_eq!(attr(attempt, "event.id").as_deref(), Some("evt_traced"));
        assert_eq!(attr(attempt, "webhook.id"), Some(webhook_id.clone()));
        assert!(attr(attempt, "delivery.id").is_some_and(|id| id.starts_with("dlv_")));
        assert_eq!(attr(attempt, "attempt").as_deref(), Some("1"));
        assert_eq!(attr(attempt, "http.status").as_deref(), Some("200"));
        assert_eq!(attr(attempt, "outcome").as_deref(), Some("succeeded"));
        // Linked to the request that created the delivery, in that request's trace.
        assert_eq!(attempt.links.len(), 1);
        assert_eq!(attempt.links[0].trace_id, cause.trace_id);
        assert_eq!(attempt.links[0].span_id, cause.span_id);
    }
    assert_eq!(attr(attempts[0], "delivery.id"), Some(first));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

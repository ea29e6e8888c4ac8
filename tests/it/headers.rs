//! Custom headers (`"headers": {...}` on a webhook): validated with a 422 naming the header, stored sealed, shown
//! masked, and sent with every attempt beside the signature.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use courier_core::MasterKey;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, call_completed, field_of};
use crate::fixture::config;
use crate::receiver::{Receiver, Reply};
use crate::support::guide_accepts;

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn refused_headers_are_422_naming_the_header_and_change_nothing(pool: PgPool) {
    let api = Api::new(pool).await;
    let refused = [
        (json!({"Host": "evil.example"}), "headers.Host"),
        (json!({"Content-Length": "1"}), "headers.Content-Length"),
        (json!({"Transfer-Encoding": "chunked"}), "headers.Transfer-Encoding"),
        (json!({"X-Webhook-Signature": "t=1,v1=x"}), "headers.X-Webhook-Signature"),
        (json!({"webhook-signature": "v1,x"}), "headers.webhook-signature"),
        (json!({"Connection": "close"}), "headers.Connection"),
        (json!({"User-Agent": "me"}), "headers.User-Agent"),
        (json!({"X Bad": "1"}), "headers.X Bad"),
        (json!({"X-Injected": "a\r\nHost: evil"}), "headers.X-Injected"),
    ];
    for (headers, field) in refused {
        let (status, body) = api
            .call(
                Method::POST,
                "/api/v1/webhooks",
                Some(json!({"url": "https://example.com/hook", "headers": headers})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {body}");
        assert_eq!(field_of(&body), vec![field.to_owned()], "{body}");
    }
    let eleven: serde_json::Map<String, serde_json::Value> = (0..11).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    let (status, body) = api
        .call(Method::POST, "/api/v1/webhooks", Some(json!({"url": "https://example.com/h", "headers": eleven})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_of(&body), vec!["headers".to_owned()]);
    let (_, list) = api.call(Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(0), "nothing was created");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn headers_are_shown_masked_sent_with_every_attempt_and_replaced_by_patch(pool: PgPool) {
    let api = Api::new(pool.clone()).await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script([Reply::Status(503)]);
    let (status, created) = api
        .call(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": receiver.url, "headers": {"X-Api-Key": "gw-123", "X-Tenant": "acme"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["headers"], json!({"X-Api-Key": "********", "X-Tenant": "********"}));
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT headers_ciphertext FROM webhooks").fetch_one(&pool).await.expect("row");
    assert!(!stored.windows(6).any(|w| w == b"gw-123"), "values are stored sealed");
    let id = created["id"].as_str().expect("id");
    let (_, shown) = api.call(Method::GET, &format!("/api/v1/webhooks/{id}"), None).await;
    assert_eq!(shown["headers"]["X-Api-Key"], "********");

    let (status, _) = api.event(call_completed("evt_headers1")).await;
    assert_eq!(status, StatusCode::CREATED);
    let mut cfg = config();
    cfg.retry.initial = Duration::from_millis(10);
    let worker = courier_worker::Worker::new(pool.clone(), MasterKey::from_bytes(&[9u8; 32]), cfg).expect("worker");
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while receiver.received().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the retry never came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    running.await.expect("joins").expect("stops");
    let secret = created["secret"].as_str().expect("secret");
    for request in receiver.received() {
        assert_eq!(request.header("x-api-key"), "gw-123");
        assert_eq!(request.header("x-tenant"), "acme");
        assert!(guide_accepts(secret, request.header("x-webhook-signature"), &request.body), "signature intact");
    }

    let (status, patched) =
        api.call(Method::PATCH, &format!("/api/v1/webhooks/{id}"), Some(json!({"headers": {"X-Other": "1"}}))).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["headers"], json!({"X-Other": "********"}));
    let (_, cleared) = api.call(Method::PATCH, &format!("/api/v1/webhooks/{id}"), Some(json!({"headers": {}}))).await;
    assert_eq!(cleared["headers"], json!({}));
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn header_values_never_follow_a_webhook_to_another_origin(pool: PgPool) {
    let api = Api::new(pool.clone()).await;
    let (status, created) = api
        .call(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": "https://gateway.example/hook", "headers": {"X-Api-Key": "gw-123"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let path = format!("/api/v1/webhooks/{}", created["id"].as_str().expect("id"));
    // Another path on the same origin keeps the credential.
    let (status, moved) = api.call(Method::PATCH, &path, Some(json!({"url": "https://gateway.example/v2"}))).await;
    assert_eq!((status, &moved["headers"]), (StatusCode::OK, &json!({"X-Api-Key": "********"})), "{moved}");
    // Another host, port or scheme without the headers restated: refused, and nothing changes.
    for url in ["https://attacker.example/hook", "https://gateway.example:8443/hook", "http://gateway.example/v2"] {
        let (status, error) = api.call(Method::PATCH, &path, Some(json!({"url": url}))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {error}");
        assert_eq!(field_of(&error), vec!["headers".to_owned()], "{error}");
    }
    let (_, unchanged) = api.call(Method::GET, &path, None).await;
    assert_eq!(unchanged["url"], "https://gateway.example/v2");
    // Restated (here: dropped) with the move, it goes through.
    let (status, moved) =
        api.call(Method::PATCH, &path, Some(json!({"url": "https://other.example/hook", "headers": {}}))).await;
    assert_eq!((status, &moved["headers"]), (StatusCode::OK, &json!({})), "{moved}");
    // A webhook without headers moves freely.
    let (status, _) = api.call(Method::PATCH, &path, Some(json!({"url": "https://third.example/hook"}))).await;
    assert_eq!(status, StatusCode::OK);
}

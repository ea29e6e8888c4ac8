//! `courier listen` and `relay` webhooks: the real server (`spawn_app`, API and worker in one process), the real
//! `courier listen` binary, and a local receiver it forwards to. What arrives locally is a real, signed delivery;
//! what the local port answers is the recorded attempt; with no listener an attempt is `no_listener`.

use std::process::Stdio;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use courier_core::{Environment, Scope};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::api::{Api, call_completed, field_of, key};
use crate::app::spawn_app;
use crate::receiver::{Receiver, Reply};
use crate::support::guide_accepts;

/// `courier listen` forwarding to `forward_to`, and its output lines as they come.
fn listen(base: &str, key: &str, forward_to: &str) -> (Child, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(["listen", "--url", base, "--key", key, "--forward-to", forward_to, "--events", "call.completed"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("courier listen starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = sender.send(line);
        }
    });
    (child, receiver)
}

/// The next output line containing `needle`, within 15 s.
async fn line_with(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let line = tokio::time::timeout_at(deadline, lines.recv()).await;
        let line = line.unwrap_or_else(|_| panic!("no line with {needle:?}")).expect("listen still runs");
        if line.contains(needle) {
            return line;
        }
    }
}

async fn post_event(app: &crate::app::TestApp, key: &str, id: &str) {
    let response = app
        .http()
        .post(format!("{}/api/v1/events", app.base))
        .bearer_auth(key)
        .header("Content-Type", "application/json")
        .body(call_completed(id).to_string())
        .send()
        .await
        .expect("ingest");
    assert_eq!(response.status().as_u16(), 201);
}

/// The last attempt of `event`'s delivery, once there is one: status code, error kind, body.
async fn last_attempt(pool: &PgPool, event: &str) -> (Option<i32>, Option<String>, Option<Vec<u8>>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let found = sqlx::query_as(
            "SELECT a.status_code, a.error_kind, a.response_body FROM delivery_attempts a
             JOIN deliveries d ON d.id = a.delivery_id WHERE d.event_id = $1 ORDER BY a.attempt DESC LIMIT 1",
        )
        .bind(event)
        .fetch_optional(pool)
        .await
        .expect("attempt");
        if let Some(found) = found {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "no attempt of {event}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn courier_listen_forwards_signed_deliveries_and_its_answers_are_the_attempts(pool: PgPool) {
    let app = spawn_app(pool.clone(), "500ms").await;
    let tenant = courier_store::tenants::create(&pool, "Dev").await.expect("tenant");
    let test_key = key(&pool, tenant.id, Environment::Test, &Scope::ALL).await;
    let local = Receiver::start(Reply::Status(201)).await;

    let (mut listener, mut lines) = listen(&app.base, &test_key, &local.url);
    let ready = line_with(&mut lines, "signing secret is").await;
    let secret = ready.split_whitespace().find(|w| w.starts_with("whsec_")).expect("the secret").to_owned();
    let relay: String = sqlx::query_scalar("SELECT id FROM webhooks WHERE destination->>'type' = 'relay'")
        .fetch_one(&pool)
        .await
        .expect("listen created a relay webhook");

    post_event(&app, &test_key, "evt_relay_1").await;
    let forwarded = line_with(&mut lines, "evt_relay_1").await;
    assert!(forwarded.contains("call.completed") && forwarded.contains("201"), "{forwarded}");
    let received = local.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert!(guide_accepts(&secret, request.header("x-webhook-signature"), &request.body), "verifies as in production");
    assert_eq!(request.header("webhook-id"), "evt_relay_1");
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(last_attempt(&pool, "evt_relay_1").await, (Some(201), None, Some(b"ok".to_vec())));

    // A second `courier listen` reuses the webhook and shows the same secret.
    let (mut second, mut second_lines) = listen(&app.base, &test_key, &local.url);
    let again = line_with(&mut second_lines, "signing secret is").await;
    assert!(again.contains(&secret), "{again}");
    let relays: i64 = sqlx::query_scalar("SELECT count(*) FROM webhooks WHERE destination->>'type' = 'relay'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(relays, 1, "the relay webhook {relay} is reused");

    // The newer listener took over: the older one stops rather than taking it back.
    let stopped = tokio::time::timeout(Duration::from_secs(10), listener.wait()).await.expect("the first one stops");
    assert!(!stopped.expect("exit status").success(), "it says why and exits non-zero");
    post_event(&app, &test_key, "evt_relay_3").await;
    line_with(&mut second_lines, "evt_relay_3").await;

    // With no listener, the attempt is recorded as `no_listener`; a listener started again gets the retry.
    second.kill().await.expect("killed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    post_event(&app, &test_key, "evt_relay_2").await;
    assert_eq!(last_attempt(&pool, "evt_relay_2").await.1.as_deref(), Some("no_listener"));
    let (_third, mut third_lines) = listen(&app.base, &test_key, &local.url);
    line_with(&mut third_lines, "evt_relay_2").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while last_attempt(&pool, "evt_relay_2").await.0 != Some(201) {
        assert!(tokio::time::Instant::now() < deadline, "the retry that reached the local port is not recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.shutdown().await;
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn relays_are_for_test_keys_and_need_a_worker_beside_the_api(pool: PgPool) {
    let api = Api::new(pool.clone()).await;
    let tenant = courier_store::tenants::create(&pool, "Live").await.expect("tenant");
    let live_key = key(&pool, tenant.id, Environment::Live, &Scope::ALL).await;
    let relay = json!({"destination": {"type": "relay"}});
    let (status, error) = api.call_as(&live_key, Method::POST, "/api/v1/webhooks", Some(relay.clone())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(field_of(&error), vec!["destination.type".to_owned()]);

    let (status, created) = api.call(Method::POST, "/api/v1/webhooks", Some(relay)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["destination"], json!({"type": "relay"}));
    // Another tenant's key cannot listen to it.
    let path = format!("/api/v1/webhooks/{}/listen", created["id"].as_str().expect("id"));
    let stranger = api.other_tenant_key().await;
    let (status, body) = api.call_as(&stranger, Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // This API runs no worker (`courier api`): a listener would never receive anything, so it is refused.
    let (status, body) = api.call(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let http = api.webhook("https://example.com/hook").await;
    let path = format!("/api/v1/webhooks/{}/listen", http["id"].as_str().expect("id"));
    let (status, body): (StatusCode, Value) = api.call(Method::GET, &path, None).await;
    assert_eq!((status, field_of(&body)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["id".to_owned()]), "{body}");
}

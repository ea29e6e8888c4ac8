//! The flow that matters, end to end: the real server on port 0 with workers, a real receiver, real HTTP.

use std::time::Duration;

use courier_core::{Environment, Scope, Scopes};
use courier_store::{api_keys, tenants};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::app::spawn_app;
use crate::receiver::{Receiver, Reply};
use crate::support::guide_accepts;

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn send(&self, method: reqwest::Method, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(key);
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body.to_string());
        }
        let res = req.send().await.expect("the server answers");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

async fn wait_for(receiver: &Receiver, n: usize) {
    for _ in 0..500 {
        if receiver.received().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("expected {n} requests, got {}", receiver.received().len());
}

// Long because it is the README walkthrough as one story: each step uses what the step before returned.
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn create_post_deliver_read_replay(pool: PgPool) {
    let app = spawn_app(pool.clone(), "50ms").await;
    let tenant = tenants::create(&pool, "Acme").await.expect("tenant");
    let admin_scopes = Scopes::new([Scope::WebhooksWrite, Scope::DeliveriesRead, Scope::DeliveriesReplay]);
    let admin = api_keys::create(&pool, tenant.id, Environment::Test, &admin_scopes).await.expect("key").plaintext;
    let emitter_scopes = Scopes::new([Scope::EventsWrite]);
    let emitter = api_keys::create(&pool, tenant.id, Environment::Test, &emitter_scopes).await.expect("key").plaintext;
    let client = Client { http: app.http(), base: app.base.clone() };

    let receiver = Receiver::start(Reply::Status(200)).await;
    let (status, webhook) = client
        .send(
            reqwest::Method::POST,
            "/api/v1/webhooks",
            &admin,
            Some(json!({"url": receiver.url, "filter": {"events": ["call.completed"], "include_transcript": true}})),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    let secret = webhook["secret"].as_str().expect("secret").to_owned();

    let event = json!({"id": "evt_e2e", "type": "call.completed",
                       "data": {"call_id": "call-1", "transcript": [{"role": "user", "content": "Hi"}], "metrics": {"x": 1}}});
    let (status, accepted) = client.send(reqwest::Method::POST, "/api/v1/events", &emitter, Some(event)).await;
    assert_eq!((status, accepted), (201, json!({"id": "evt_e2e", "deliveries": 1})));

    wait_for(&receiver, 1).await;
    let first = &receiver.received()[0];
    assert!(
        guide_accepts(&secret, first.header("x-webhook-signature"), &first.body),
        "the guide's verifier accepts it"
    );
    let body = first.json();
    assert_eq!(body["event"]["id"], "evt_e2e");
    assert!(body["event"]["data"]["transcript"].is_array());
    assert!(body["event"]["data"].get("metrics").is_none());

    // The attempt is recorded right after the response; give the recorder a moment.
    let mut delivery = Value::Null;
    for _ in 0..200 {
        let (status, page) = client.send(reqwest::Method::GET, "/api/v1/deliveries", &admin, None).await;
        assert_eq!(status, 200);
        delivery = page["data"][0].clone();
        if delivery["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!((delivery["status"].as_str(), delivery["attempt_count"].as_u64()), (Some("succeeded"), Some(1)));
    let id = delivery["id"].as_str().expect("id").to_owned();
    assert_eq!(first.header("x-webhook-delivery"), id);
    let (_, detail) = client.send(reqwest::Method::GET, &format!("/api/v1/deliveries/{id}"), &admin, None).await;
    assert_eq!(detail["attempts"][0]["status_code"], 200);
    assert_eq!(detail["attempts"][0]["response_body"], "ok");

    let (status, replay) =
        client.send(reqwest::Method::POST, &format!("/api/v1/deliveries/{id}/replay"), &admin, None).await;
    assert_eq!(status, 201, "{replay}");
    wait_for(&receiver, 2).await;
    let second = &receiver.received()[1];
    assert_eq!(second.json()["event"]["id"], "evt_e2e");
    assert_eq!(second.header("x-webhook-delivery"), replay["id"].as_str().expect("id"));
    assert!(guide_accepts(&secret, second.header("x-webhook-signature"), &second.body));

    // The emitter's key cannot read logs.
    let (status, _) = client.send(reqwest::Method::GET, "/api/v1/deliveries", &emitter, None).await;
    assert_eq!(status, 403);

    app.shutdown().await;
}

//! The HTTP API through `oneshot`: every route, every error path, isolation, idempotency, rate limits, OpenAPI.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use courier_api::{ApiConfig, AppState, RateLimit, WebhookRules};
use courier_core::MasterKey;
use courier_core::{Environment, Scope, Scopes};
use courier_store::{api_keys, tenants};
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt;

#[derive(Clone)]
pub struct Api {
    pub router: Router,
    pub pool: PgPool,
    /// Every scope, test environment.
    pub key: String,
}

pub fn api_config() -> ApiConfig {
    ApiConfig {
        rate_limit: None,
        statement_timeout: Duration::from_secs(5),
        webhooks: WebhookRules {
            allow_http: false,
            allowed_targets: vec!["127.0.0.0/8".parse().expect("cidr")],
            rotation_grace: Duration::from_secs(3600),
            default_max_attempts: 5,
            max_webhooks: 100,
        },
    }
}

pub async fn key(pool: &PgPool, tenant: courier_core::TenantId, env: Environment, scopes: &[Scope]) -> String {
    api_keys::create(pool, tenant, env, &Scopes::new(scopes.iter().copied())).await.expect("key").plaintext
}

impl Api {
    pub async fn new(pool: PgPool) -> Self {
        Self::with_config(pool, api_config()).await
    }

    pub async fn with_config(pool: PgPool, config: ApiConfig) -> Self {
        let tenant = tenants::create(&pool, "Acme").await.expect("tenant");
        let key = key(&pool, tenant.id, Environment::Test, &Scope::ALL).await;
        let state = AppState::new(pool.clone(), MasterKey::from_bytes(&[9u8; 32]), config);
        Self { router: courier_api::router(state), pool, key }
    }

    /// A key for a brand-new tenant.
    pub async fn other_tenant_key(&self) -> String {
        let tenant = tenants::create(&self.pool, "Globex").await.expect("tenant");
        key(&self.pool, tenant.id, Environment::Test, &Scope::ALL).await
    }

    pub async fn raw(
        &self,
        method: Method,
        uri: &str,
        key: Option<&str>,
        body: Body,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(uri).header("content-type", "application/json");
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        let res = self.router.clone().oneshot(req.body(body).expect("request")).await.expect("response");
        let (parts, body) = res.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        let value =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("every body is JSON") };
        assert!(parts.headers.contains_key("x-request-id"), "{uri}: every response carries X-Request-Id");
        if !parts.status.is_success() {
            check_error_shape(parts.status, &value);
        }
        (parts.status, parts.headers, value)
    }

    pub async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(&self.key, method, uri, body).await
    }

    pub async fn call_as(&self, key: &str, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let body = body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty);
        let (status, _, value) = self.raw(method, uri, Some(key), body).await;
        (status, value)
    }

    pub async fn webhook(&self, url: &str) -> Value {
        let (status, body) =
            self.call(Method::POST, "/api/v1/webhooks", Some(json!({"url": url, "filter": {"events": ["*"]}}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    pub async fn event(&self, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, "/api/v1/events", Some(body)).await
    }
}

/// Every error is `{"error": {"code", "message", "details"}}`.
fn check_error_shape(status: StatusCode, body: &Value) {
    let error = &body["error"];
    assert!(error["code"].is_string(), "{status}: {body}");
    assert!(error["message"].is_string(), "{status}: {body}");
    assert!(error["details"].is_array(), "{status}: {body}");
}

fn call_completed(id: &str) -> Value {
    json!({"id": id, "type": "call.completed", "created": 1705680000,
           "data": {"call_id": "call-uuid", "transcript": [{"role": "user", "content": "Hi"}], "metrics": {"agent_count": 2}}})
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn authentication_failures_are_401_and_missing_scopes_403(pool: PgPool) {
    let api = Api::new(pool).await;
    let (status, _, body) = api.raw(Method::GET, "/api/v1/webhooks", None, Body::empty()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    for bad in ["as_test_nope", "Basic abc", "sk_live_123", ""] {
        let req = Request::get("/api/v1/webhooks")
            .header("authorization", format!("Bearer {bad}"))
            .body(Body::empty())
            .expect("req");
        let res = api.router.clone().oneshot(req).await.expect("res");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{bad}");
    }
    let tenant = courier_store::api_keys::authenticate(&api.pool, &api.key).await.expect("lookup");
    let courier_store::api_keys::KeyLookup::Valid(k) = tenant else { panic!("valid") };
    let emitter = key(&api.pool, k.owner.tenant, Environment::Test, &[Scope::EventsWrite]).await;
    let (status, body) = api.call_as(&emitter, Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["error"]["message"].as_str().expect("message").contains("webhooks:read"), "{body}");
    let (status, _) = api.call_as(&emitter, Method::GET, "/api/v1/deliveries", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api.call_as(&emitter, Method::POST, "/api/v1/events", Some(call_completed("evt_1"))).await;
    assert_eq!(status, StatusCode::CREATED);
    // The guide's scopes are valid names that grant nothing here.
    let guide_only = key(&api.pool, k.owner.tenant, Environment::Test, &[Scope::CallsInitiate, Scope::CallsRead]).await;
    let (status, _) = api.call_as(&guide_only, Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let revoked =
        api_keys::create(&api.pool, k.owner.tenant, Environment::Test, &Scopes::new(Scope::ALL)).await.expect("key");
    api_keys::revoke(&api.pool, &revoked.key.id).await.expect("revoke");
    let (status, body) = api.call_as(&revoked.plaintext, Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"]["message"].as_str().expect("message").contains("revoked"));
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn webhooks_are_created_as_the_guide_shows_and_managed(pool: PgPool) {
    let api = Api::new(pool).await;
    let (status, created) = api
        .call(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({
                "url": "https://your-backend.com/webhooks/agent-studio",
                "filter": {"events": ["call.completed", "call.failed"], "include_transcript": true, "include_metrics": true},
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("wh_"));
    assert!(created["secret"].as_str().expect("secret").starts_with("whsec_"));
    assert_eq!(
        created["filter"],
        json!({"events": ["call.completed", "call.failed"], "include_transcript": true, "include_metrics": true})
    );
    assert_eq!(
        (created["status"].as_str(), created["livemode"].as_bool(), created["max_attempts"].as_u64()),
        (Some("enabled"), Some(false), Some(5))
    );

    let (status, got) = api.call(Method::GET, &format!("/api/v1/webhooks/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(got.get("secret").is_none(), "the secret is shown once");

    let (status, patched) = api
        .call(
            Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            Some(json!({"filter": {"events": ["*"]}, "description": "billing", "max_attempts": 9})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["filter"]["events"], json!(["*"]));
    assert_eq!(patched["filter"]["include_transcript"], true, "unnamed fields keep their value");
    assert_eq!((patched["description"].as_str(), patched["max_attempts"].as_u64()), (Some("billing"), Some(9)));

    let (status, rotated) = api.call(Method::POST, &format!("/api/v1/webhooks/{id}/rotate-secret"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(rotated["secret"], created["secret"]);
    assert!(rotated["previous_secret_expires_at"].is_string());

    let (status, disabled) =
        api.call(Method::PATCH, &format!("/api/v1/webhooks/{id}"), Some(json!({"status": "disabled"}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((disabled["status"].as_str(), disabled["disabled_reason"].as_str()), (Some("disabled"), Some("manual")));

    let (status, body) = api.call(Method::DELETE, &format!("/api/v1/webhooks/{id}"), None).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let (status, _) = api.call(Method::GET, &format!("/api/v1/webhooks/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.call(Method::DELETE, &format!("/api/v1/webhooks/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn webhook_lists_page_with_cursors(pool: PgPool) {
    let api = Api::new(pool).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(api.webhook(&format!("https://example.com/{i}")).await["id"].as_str().expect("id").to_owned());
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut uri = "/api/v1/webhooks?limit=2".to_owned();
    loop {
        let (status, page) = api.call(Method::GET, &uri, None).await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(page["data"].as_array().expect("data").iter().map(|w| w["id"].as_str().expect("id").to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/api/v1/webhooks?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    for bad in ["limit=0", "limit=101", "limit=x", "cursor=nope", "colour=red"] {
        let (status, _) = api.call(Method::GET, &format!("/api/v1/webhooks?{bad}"), None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn bad_webhook_input_is_refused_and_changes_nothing(pool: PgPool) {
    let api = Api::new(pool).await;
    let cases = [
        (json!({"url": "ftp://example.com"}), "url"),
        (json!({"url": "https://user:pw@example.com/"}), "url"),
        (json!({"url": "https://10.1.2.3/hook"}), "url"),
        (json!({"url": format!("https://example.com/{}", "a".repeat(2100))}), "url"),
        (json!({"url": "https://example.com", "filter": {"events": ["call.exploded"]}}), "filter.events"),
        (json!({"url": "https://example.com", "filter": {"events": []}}), "filter.events"),
        (json!({"url": "https://example.com", "max_attempts": 26}), "max_attempts"),
        (json!({"url": "https://example.com", "colour": "red"}), "colour"),
        (json!({"url": 7}), "url"),
        (json!({}), "url"),
    ];
    for (body, field) in cases {
        let (status, error) = api.call(Method::POST, "/api/v1/webhooks", Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
        let fields: Vec<&str> =
            error["error"]["details"].as_array().expect("details").iter().filter_map(|d| d["field"].as_str()).collect();
        assert!(fields.contains(&field), "{body}: {error}");
    }
    let (status, _, body) = api.raw(Method::POST, "/api/v1/webhooks", Some(&api.key), Body::from("{not json")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
    let huge = json!({"url": "https://example.com", "description": "x".repeat(100 * 1024)});
    let (status, _) = api.call(Method::POST, "/api/v1/webhooks", Some(huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (_, list) = api.call(Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(list["data"], json!([]), "nothing was created");

    // Live keys need https.
    let k = match api_keys::authenticate(&api.pool, &api.key).await.expect("lookup") {
        api_keys::KeyLookup::Valid(k) => k,
        other => panic!("{other:?}"),
    };
    let live = key(&api.pool, k.owner.tenant, Environment::Live, &[Scope::WebhooksWrite]).await;
    let (status, _) =
        api.call_as(&live, Method::POST, "/api/v1/webhooks", Some(json!({"url": "http://example.com/"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, created) =
        api.call_as(&live, Method::POST, "/api/v1/webhooks", Some(json!({"url": "https://example.com/"}))).await;
    assert_eq!((status, created["livemode"].as_bool()), (StatusCode::CREATED, Some(true)));
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn events_are_idempotent_and_validated(pool: PgPool) {
    let api = Api::new(pool).await;
    api.webhook("https://example.com/a").await;
    api.webhook("https://example.com/b").await;
    let (status, first) = api.event(call_completed("evt_abc123")).await;
    assert_eq!((status, first.clone()), (StatusCode::CREATED, json!({"id": "evt_abc123", "deliveries": 2})));
    let (status, again) = api.event(call_completed("evt_abc123")).await;
    assert_eq!((status, again), (StatusCode::OK, first));
    let mut changed = call_completed("evt_abc123");
    changed["data"]["call_id"] = json!("another-call");
    let (status, body) = api.event(changed).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    let (status, generated) = api.event(json!({"type": "call.started", "data": {"call_id": "c"}})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(generated["id"].as_str().expect("id").starts_with("evt_"));

    for (body, field) in [
        (json!({"type": "call.exploded", "data": {"call_id": "c"}}), "type"),
        (json!({"type": "call.started", "data": {"no_call_id": true}}), "data.call_id"),
        (json!({"type": "call.started", "data": ["not", "an", "object"]}), "data"),
        (json!({"type": "call.started", "data": {"call_id": 5}}), "data.call_id"),
        (json!({"type": "call.started", "data": {"call_id": "c".repeat(257)}}), "data.call_id"),
        (json!({"type": "call.started", "created": 1_700_000_000_000i64, "data": {"call_id": "c"}}), "created"),
        (json!({"type": "call.started", "created": 12, "data": {"call_id": "c"}}), "created"),
        (json!({"id": "nope", "type": "call.started", "data": {"call_id": "c"}}), "id"),
        (json!({"type": "call.started"}), "data"),
        (json!({"type": "call.started", "data": {"call_id": "c"}, "extra": 1}), "extra"),
        (json!({"type": "call.started", "data": {"call_id": "c", "note": "nul \u{0} here"}}), "data"),
    ] {
        let (status, error) = api.event(body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
        assert!(
            error["error"]["details"].as_array().expect("details").iter().any(|d| d["field"] == field),
            "{body}: {error}"
        );
    }
    let big = json!({"type": "call.started", "data": {"call_id": "c", "blob": "x".repeat(300 * 1024)}});
    let (status, _) = api.event(big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let nearly = json!({"type": "call.started", "data": {"call_id": "c", "blob": "x".repeat(255 * 1024)}});
    assert_eq!(api.event(nearly).await.0, StatusCode::CREATED, "just under the limit is accepted");

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&api.pool).await.expect("count");
    assert_eq!(count, 3, "refused events changed nothing");
    let (status, event) = api.call(Method::GET, "/api/v1/events/evt_abc123", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(event["deliveries"].as_array().expect("deliveries").len(), 2);
    assert_eq!(event["data"]["call_id"], "call-uuid");
    let (status, page) = api.call(Method::GET, "/api/v1/events?limit=2", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["data"].as_array().expect("data").len(), 2);
    let cursor = page["next_cursor"].as_str().expect("more");
    let (_, rest) = api.call(Method::GET, &format!("/api/v1/events?limit=2&cursor={cursor}"), None).await;
    assert_eq!(rest["data"].as_array().expect("data").len(), 1);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn batches_answer_per_item_in_order(pool: PgPool) {
    let api = Api::new(pool).await;
    api.webhook("https://example.com/a").await;
    api.event(call_completed("evt_old")).await;
    let mut conflicting = call_completed("evt_old");
    conflicting["type"] = json!("call.failed");
    let batch = json!({"events": [
        call_completed("evt_b1"),
        {"type": "call.nope", "data": {"call_id": "c"}},
        call_completed("evt_old"),
        conflicting,
        call_completed("evt_b1"),
        {"type": "call.started", "data": {"call_id": "c"}},
        {"type": "call.started", "data": {"call_id": "c"}, "unknown": true},
    ]});
    let (status, body) = api.call(Method::POST, "/api/v1/events/batch", Some(batch)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body["data"].as_array().expect("data");
    assert_eq!(items.len(), 7);
    assert_eq!(items[0], json!({"id": "evt_b1", "deliveries": 1}));
    assert_eq!(items[1]["error"]["code"], "validation_failed");
    assert_eq!(items[2], json!({"id": "evt_old", "deliveries": 1}));
    assert_eq!(items[3]["error"]["code"], "conflict");
    assert_eq!(items[4], json!({"id": "evt_b1", "deliveries": 1}), "a repeat inside the batch answers like the first");
    assert_eq!(items[5]["deliveries"], 1);
    assert_eq!(items[6]["error"]["code"], "validation_failed");
    let deliveries: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deliveries").fetch_one(&api.pool).await.expect("count");
    assert_eq!(deliveries, 3, "evt_old once, evt_b1 once, the generated one once");

    let too_many = json!({"events": vec![json!({"type": "call.started", "data": {"call_id": "c"}}); 1001]});
    let (status, _) = api.call(Method::POST, "/api/v1/events/batch", Some(too_many)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = api.call(Method::POST, "/api/v1/events/batch", Some(json!({"events": []}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // An item that is not even an object makes the batch malformed: nothing of it is stored.
    let malformed = json!({"events": [call_completed("evt_never"), "not an object"]});
    let (status, body) = api.call(Method::POST, "/api/v1/events/batch", Some(malformed)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"][0]["field"], "events");
    assert_eq!(api.call(Method::GET, "/api/v1/events/evt_never", None).await.0, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn the_same_event_from_twenty_concurrent_requests_is_stored_once(pool: PgPool) {
    let api = Api::new(pool).await;
    for i in 0..3 {
        api.webhook(&format!("https://example.com/{i}")).await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let api = api.clone();
        tasks.spawn(async move { api.event(call_completed("evt_concurrent")).await });
    }
    let answers = tasks.join_all().await;
    let created = answers.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    assert_eq!(created, 1, "{answers:?}");
    assert!(
        answers.iter().all(|(s, b)| (*s == StatusCode::CREATED || *s == StatusCode::OK) && b["deliveries"] == 3),
        "{answers:?}"
    );
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&api.pool).await.expect("count");
    let deliveries: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deliveries").fetch_one(&api.pool).await.expect("count");
    assert_eq!((events, deliveries), (1, 3));
}

/// Single-event requests that arrive together share a transaction: each still gets its own answer, across tenants,
/// repeats and conflicts, and one request whose statement fails does not fail the others.
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn concurrent_requests_share_transactions_but_not_fates(pool: PgPool) {
    let api = Api::new(pool).await;
    api.webhook("https://example.com/a").await;
    let other = api.other_tenant_key().await;
    // A database-level failure for one event id, as a stand-in for any statement error.
    sqlx::raw_sql(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.id = 'evt_poison' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION poison();",
    )
    .execute(&api.pool)
    .await
    .expect("trigger");
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..3 {
        for i in 0..40 {
            let api = api.clone();
            let other = other.clone();
            tasks.spawn(async move {
                let (id, key, body) = match i {
                    0 => ("evt_poison".to_owned(), api.key.clone(), call_completed("evt_poison")),
                    1..=9 => (format!("evt_other{i}"), other, call_completed(&format!("evt_other{i}"))),
                    // The same id from every round, with the same body: stored once.
                    10 => ("evt_same".to_owned(), api.key.clone(), call_completed("evt_same")),
                    _ => {
                        let id = format!("evt_r{round}_{i}");
                        (id.clone(), api.key.clone(), call_completed(&id))
                    }
                };
                let (status, body) = api.call_as(&key, Method::POST, "/api/v1/events", Some(body)).await;
                (id, status, body)
            });
        }
    }
    let answers = tasks.join_all().await;
    for (id, status, body) in &answers {
        match id.as_str() {
            "evt_poison" => assert_eq!(*status, StatusCode::INTERNAL_SERVER_ERROR, "{body}"),
            // The other tenant has no webhooks; its first post of each id creates, the later rounds repeat.
            other if other.starts_with("evt_other") => {
                assert!(matches!(*status, StatusCode::CREATED | StatusCode::OK), "{id}: {body}");
                assert_eq!(body["deliveries"], 0, "{id}: {body}");
            }
            _ => {
                assert!(matches!(*status, StatusCode::CREATED | StatusCode::OK), "{id}: {body}");
                assert_eq!((body["id"].as_str(), &body["deliveries"]), (Some(id.as_str()), &json!(1)), "{body}");
            }
        }
    }
    let created =
        |prefix: &str| answers.iter().filter(|(id, s, _)| id.starts_with(prefix) && *s == StatusCode::CREATED).count();
    assert_eq!((created("evt_same"), created("evt_other"), created("evt_r")), (1, 9, 3 * 29));
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&api.pool).await.expect("count");
    let deliveries: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deliveries").fetch_one(&api.pool).await.expect("count");
    assert_eq!((events, deliveries), (1 + 9 + 3 * 29, 1 + 3 * 29));
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn delivery_logs_filter_and_replay(pool: PgPool) {
    let api = Api::new(pool).await;
    let a = api.webhook("https://example.com/a").await["id"].as_str().expect("id").to_owned();
    let b = api.webhook("https://example.com/b").await["id"].as_str().expect("id").to_owned();
    api.event(call_completed("evt_1")).await;
    api.event(json!({"id": "evt_2", "type": "call.failed", "data": {"call_id": "other-call"}})).await;

    let (status, all) = api.call(Method::GET, "/api/v1/deliveries", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["data"].as_array().expect("data").len(), 4);
    let count = |v: &Value| v["data"].as_array().expect("data").len();
    assert_eq!(count(&api.call(Method::GET, &format!("/api/v1/deliveries?webhook_id={a}"), None).await.1), 2);
    assert_eq!(count(&api.call(Method::GET, "/api/v1/deliveries?event_type=call.failed", None).await.1), 2);
    assert_eq!(count(&api.call(Method::GET, "/api/v1/deliveries?call_id=other-call", None).await.1), 2);
    assert_eq!(count(&api.call(Method::GET, "/api/v1/deliveries?status=pending", None).await.1), 4);
    assert_eq!(count(&api.call(Method::GET, "/api/v1/deliveries?status=failed", None).await.1), 0);
    assert_eq!(count(&api.call(Method::GET, "/api/v1/deliveries?since=2100-01-01T00:00:00Z", None).await.1), 0);
    assert_eq!(count(&api.call(Method::GET, "/api/v1/deliveries?until=2100-01-01T00:00:00Z&limit=3", None).await.1), 3);
    for bad in ["status=lost", "event_type=call.nope", "since=yesterday", "webhook_id=nope", "limit=500"] {
        let (status, _) = api.call(Method::GET, &format!("/api/v1/deliveries?{bad}"), None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }

    let (_, of_a) = api.call(Method::GET, &format!("/api/v1/deliveries?webhook_id={a}"), None).await;
    let first = of_a["data"][0]["id"].as_str().expect("id").to_owned();
    let (status, one) = api.call(Method::GET, &format!("/api/v1/deliveries/{first}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["attempts"], json!([]));
    let (status, replay) = api.call(Method::POST, &format!("/api/v1/deliveries/{first}/replay"), None).await;
    assert_eq!(status, StatusCode::CREATED, "{replay}");
    assert_eq!(replay["replay_of"], first.as_str());
    assert_eq!((replay["status"].as_str(), replay["attempt_count"].as_u64()), (Some("pending"), Some(0)));

    // Make b's deliveries failed, then bulk-replay them.
    sqlx::query("UPDATE deliveries SET status = 'failed', next_attempt_at = NULL WHERE webhook_id = $1")
        .bind(&b)
        .execute(&api.pool)
        .await
        .expect("fail them");
    let (status, dry) = api.call(Method::POST, "/api/v1/deliveries/replay", Some(json!({"dry_run": true}))).await;
    assert_eq!((status, dry), (StatusCode::OK, json!({"queued": 2, "dry_run": true})));
    let (status, job) = api
        .call(Method::POST, "/api/v1/deliveries/replay", Some(json!({"webhook_id": b, "event_types": ["call.failed"]})))
        .await;
    assert_eq!(
        (status, job["status"].as_str(), job["replayed"].as_u64()),
        (StatusCode::ACCEPTED, Some("queued"), Some(0))
    );
    let job = job["id"].as_str().expect("job id").to_owned();
    while courier_scheduler::replay::advance(&api.pool).await.expect("advance") {}
    let (status, done) = api.call(Method::GET, &format!("/api/v1/replays/{job}"), None).await;
    assert_eq!(
        (status, done["status"].as_str(), done["replayed"].as_u64()),
        (StatusCode::OK, Some("finished"), Some(1))
    );
    let (status, _) = api.call(Method::POST, "/api/v1/deliveries/replay", Some(json!({"status": "lost"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // A disabled webhook's deliveries are not replayed; its pending ones were cancelled.
    api.call(Method::PATCH, &format!("/api/v1/webhooks/{a}"), Some(json!({"status": "disabled"}))).await;
    let (status, _) = api.call(Method::POST, &format!("/api/v1/deliveries/{first}/replay"), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, cancelled) =
        api.call(Method::GET, &format!("/api/v1/deliveries?webhook_id={a}&status=cancelled"), None).await;
    assert_eq!(count(&cancelled), 3);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn another_tenant_sees_nothing_and_gets_404_everywhere(pool: PgPool) {
    let api = Api::new(pool).await;
    let webhook = api.webhook("https://example.com/a").await["id"].as_str().expect("id").to_owned();
    api.event(call_completed("evt_private")).await;
    let (_, list) = api.call(Method::GET, "/api/v1/deliveries", None).await;
    let delivery = list["data"][0]["id"].as_str().expect("id").to_owned();

    let other = api.other_tenant_key().await;
    for (method, uri, body) in [
        (Method::GET, format!("/api/v1/webhooks/{webhook}"), None),
        (Method::PATCH, format!("/api/v1/webhooks/{webhook}"), Some(json!({"description": "mine"}))),
        (Method::DELETE, format!("/api/v1/webhooks/{webhook}"), None),
        (Method::POST, format!("/api/v1/webhooks/{webhook}/rotate-secret"), None),
        (Method::GET, "/api/v1/events/evt_private".to_owned(), None),
        (Method::GET, format!("/api/v1/deliveries/{delivery}"), None),
        (Method::POST, format!("/api/v1/deliveries/{delivery}/replay"), None),
    ] {
        let (status, body) = api.call_as(&other, method.clone(), &uri, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {body}");
    }
    for uri in ["/api/v1/webhooks", "/api/v1/deliveries", "/api/v1/events"] {
        let (status, body) = api.call_as(&other, Method::GET, uri, None).await;
        assert_eq!((status, &body["data"]), (StatusCode::OK, &json!([])), "{uri}");
    }
    let (_, job) =
        api.call_as(&other, Method::POST, "/api/v1/deliveries/replay", Some(json!({"status": "pending"}))).await;
    while courier_scheduler::replay::advance(&api.pool).await.expect("advance") {}
    let job = job["id"].as_str().expect("job id").to_owned();
    let (_, done) = api.call_as(&other, Method::GET, &format!("/api/v1/replays/{job}"), None).await;
    assert_eq!((done["status"].as_str(), done["replayed"].as_u64()), (Some("finished"), Some(0)));
    // A tenant's replay job is invisible to another.
    assert_eq!(api.call(Method::GET, &format!("/api/v1/replays/{job}"), None).await.0, StatusCode::NOT_FOUND);
    // The same event id is free for the other tenant: ids are per tenant.
    let (status, _) = api.call_as(&other, Method::POST, "/api/v1/events", Some(call_completed("evt_private"))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, mine) = api.call(Method::GET, &format!("/api/v1/webhooks/{webhook}"), None).await;
    assert_eq!(mine["status"], "enabled", "untouched by the other tenant");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn keys_are_rate_limited_with_retry_after(pool: PgPool) {
    let config = ApiConfig { rate_limit: Some(RateLimit { per_second: 0.5, burst: 2.0 }), ..api_config() };
    let api = Api::with_config(pool, config).await;
    assert_eq!(api.call(Method::GET, "/api/v1/webhooks", None).await.0, StatusCode::OK);
    assert_eq!(api.call(Method::GET, "/api/v1/webhooks", None).await.0, StatusCode::OK);
    let (status, headers, body) = api.raw(Method::GET, "/api/v1/webhooks", Some(&api.key), Body::empty()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")));
    let retry: u64 = headers["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=2).contains(&retry), "{retry}");
    // Another key has its own bucket.
    let other = api.other_tenant_key().await;
    assert_eq!(api.call_as(&other, Method::GET, "/api/v1/webhooks", None).await.0, StatusCode::OK);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn unknown_routes_and_methods_answer_in_json(pool: PgPool) {
    let api = Api::new(pool).await;
    let (status, body) = api.call(Method::GET, "/api/v1/nothing", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, _) = api.call(Method::PUT, "/api/v1/webhooks", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = api.call(Method::GET, "/api/v1/webhooks/not-an-id", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn health_and_readiness(pool: PgPool) {
    let api = Api::new(pool).await;
    let (status, _, body) = api.raw(Method::GET, "/healthz", None, Body::empty()).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (status, _, body) = api.raw(Method::GET, "/readyz", None, Body::empty()).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ready")));
}

#[tokio::test]
async fn an_unreachable_database_is_503_not_500() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy(&format!("postgres://courier:x@127.0.0.1:{closed_port}/courier"))
        .expect("lazy pool");
    let state = AppState::new(pool.clone(), MasterKey::from_bytes(&[1u8; 32]), api_config());
    let api =
        Api { router: courier_api::router(state), pool, key: "as_test_abcdefghijklmnopqrstuvwxyz012345".to_owned() };
    let (status, headers, body) = api.raw(Method::GET, "/readyz", None, Body::empty()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("service_unavailable"))
    );
    assert!(headers.contains_key("retry-after"));
    let (status, body) = api.call(Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(!body.to_string().contains("127.0.0.1"), "internals do not leak: {body}");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn the_openapi_document_parses_and_lists_every_route(pool: PgPool) {
    let api = Api::new(pool).await;
    let (status, _, doc) = api.raw(Method::GET, "/openapi.json", None, Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let expected = [
        ("/api/v1/webhooks", vec!["get", "post"]),
        ("/api/v1/webhooks/{id}", vec!["delete", "get", "patch"]),
        ("/api/v1/webhooks/{id}/rotate-secret", vec!["post"]),
        ("/api/v1/events", vec!["get", "post"]),
        ("/api/v1/events/batch", vec!["post"]),
        ("/api/v1/events/{id}", vec!["get"]),
        ("/api/v1/deliveries", vec!["get"]),
        ("/api/v1/deliveries/{id}", vec!["get"]),
        ("/api/v1/deliveries/{id}/replay", vec!["post"]),
        ("/api/v1/deliveries/replay", vec!["post"]),
        ("/api/v1/replays/{id}", vec!["get"]),
        ("/healthz", vec!["get"]),
        ("/readyz", vec!["get"]),
    ];
    let paths = doc["paths"].as_object().expect("paths");
    assert_eq!(paths.len(), expected.len(), "{:?}", paths.keys().collect::<Vec<_>>());
    for (path, methods) in expected {
        let item = paths.get(path).unwrap_or_else(|| panic!("{path} is documented"));
        let mut documented: Vec<&str> = item.as_object().expect("item").keys().map(String::as_str).collect();
        documented.sort();
        assert_eq!(documented, methods, "{path}");
    }
    // Every $ref points at a schema that exists.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().expect("name");
        assert!(schemas.contains_key(name), "dangling $ref {name}");
    }
}

/// Real errors from PostgreSQL: the server ending a session (57P01) and a statement cut short (57014) are the
/// database being unavailable, a 503 with `Retry-After` the client retries; a constraint violation is not.
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn the_database_going_away_mid_request_is_a_503_with_retry_after(pool: PgPool) {
    use axum::response::IntoResponse;
    let status_of = |err: sqlx::Error| {
        let res = courier_api::ApiError::from(err).into_response();
        (res.status(), res.headers().get("retry-after").is_some())
    };
    let mut conn = pool.acquire().await.expect("connection");
    let terminated = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
        .execute(&mut *conn)
        .await
        .expect_err("the server ends the session");
    assert_eq!(status_of(terminated), (StatusCode::SERVICE_UNAVAILABLE, true));
    drop(conn);

    let mut tx = pool.begin().await.expect("tx");
    sqlx::query("SET LOCAL statement_timeout = 10").execute(&mut *tx).await.expect("set");
    let cancelled = sqlx::query("SELECT pg_sleep(1)").execute(&mut *tx).await.expect_err("timed out");
    assert_eq!(status_of(cancelled), (StatusCode::SERVICE_UNAVAILABLE, true));
    drop(tx);

    let violation = sqlx::query("INSERT INTO tenants (id, name) VALUES (gen_random_uuid(), '')")
        .execute(&pool)
        .await
        .expect_err("check constraint");
    assert_eq!(status_of(violation), (StatusCode::INTERNAL_SERVER_ERROR, false));
}

fn field_of(error: &Value) -> Vec<String> {
    error["error"]["details"]
        .as_array()
        .map(|d| d.iter().filter_map(|x| x["field"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_tenant_cannot_pass_its_webhook_limit_even_all_at_once(pool: PgPool) {
    let base = api_config();
    let config = ApiConfig { webhooks: WebhookRules { max_webhooks: 3, ..base.webhooks.clone() }, ..base };
    let api = Api::with_config(pool, config).await;
    // Five creations at once against a limit of three: the tenant's lock lets exactly three through.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..5 {
        let api = api.clone();
        calls.spawn(async move {
            let body = json!({"url": format!("https://example.com/hook/{i}")});
            api.call(Method::POST, "/api/v1/webhooks", Some(body)).await
        });
    }
    let answers = calls.join_all().await;
    let created = answers.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    assert_eq!(created, 3, "{answers:?}");
    for (status, error) in answers.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_eq!(*status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(field_of(error), vec!["url".to_owned()], "{error}");
        assert!(error["error"]["details"][0]["message"].as_str().unwrap_or_default().contains("limit"), "{error}");
    }
    // Deleting one makes room again.
    let (_, list) = api.call(Method::GET, "/api/v1/webhooks", None).await;
    let id = list["data"][0]["id"].as_str().expect("id").to_owned();
    assert_eq!(api.call(Method::DELETE, &format!("/api/v1/webhooks/{id}"), None).await.0, StatusCode::NO_CONTENT);
    let again = api.call(Method::POST, "/api/v1/webhooks", Some(json!({"url": "https://example.com/again"}))).await;
    assert_eq!(again.0, StatusCode::CREATED, "{:?}", again.1);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn strings_postgres_cannot_hold_or_should_not_are_422_naming_the_field(pool: PgPool) {
    let api = Api::new(pool).await;
    let too_many: Vec<&str> = std::iter::repeat_n("call.completed", 65).collect();
    // Normalising percent-encodes the path: 1,400 bytes of `é` become 4,200 of `%C3%A9`, past 2,048 once stored.
    let idn = format!("https://example.com/{}", "é".repeat(700));
    for (body, field) in [
        (json!({"url": "https://example.com/h", "description": "bad \u{0} byte"}), "description"),
        (json!({"url": "https://example.com/h", "filter": {"events": too_many}}), "filter.events"),
        (json!({"url": idn}), "url"),
    ] {
        let (status, error) = api.call(Method::POST, "/api/v1/webhooks", Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
        assert_eq!(field_of(&error), vec![field.to_owned()], "{error}");
    }
    for (query, field) in [("call_id=a%00b", "call_id"), (&*format!("call_id={}", "c".repeat(257)), "call_id")] {
        let (status, error) = api.call(Method::GET, &format!("/api/v1/deliveries?{query}"), None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {error}");
        assert_eq!(field_of(&error), vec![field.to_owned()], "{error}");
    }
    let (_, list) = api.call(Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(0), "nothing was created");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_test_event_can_neither_squat_on_nor_reveal_a_live_event_id(pool: PgPool) {
    let api = Api::new(pool).await;
    let tenant = match api_keys::authenticate(&api.pool, &api.key).await.expect("lookup") {
        api_keys::KeyLookup::Valid(k) => k.owner.tenant,
        other => panic!("{other:?}"),
    };
    let live = key(&api.pool, tenant, Environment::Live, &[Scope::EventsWrite, Scope::DeliveriesRead]).await;
    // The test key takes the id first, with a different body.
    let mut test_body = call_completed("evt_contested");
    test_body["data"]["call_id"] = json!("test-call");
    assert_eq!(api.event(test_body).await.0, StatusCode::CREATED);
    // The live event with that id is still accepted as new, not refused as a conflict.
    let (status, body) =
        api.call_as(&live, Method::POST, "/api/v1/events", Some(call_completed("evt_contested"))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // And a test key learns nothing of live events: posting the live body in test mode conflicts with the test
    // event only (409 from its own environment), and reading the id shows the test event.
    let (status, _) = api.event(call_completed("evt_contested")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, seen) = api.call(Method::GET, "/api/v1/events/evt_contested", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen["data"]["call_id"], "test-call", "{seen}");
    assert_eq!(seen["livemode"], false, "{seen}");
}

/// One request from `addr` with `key`, through the router as a connected client.
async fn from_address(api: &Api, addr: &str, method: Method, uri: &str, key: &str, body: Body) -> StatusCode {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(body)
        .expect("request");
    let addr: std::net::SocketAddr = addr.parse().expect("address");
    req.extensions_mut().insert(axum::extract::ConnectInfo(addr));
    api.router.clone().oneshot(req).await.expect("response").status()
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn guessing_keys_is_rate_limited_by_address_and_a_batch_counts_its_events(pool: PgPool) {
    let config = ApiConfig { rate_limit: Some(RateLimit { per_second: 1.0, burst: 5.0 }), ..api_config() };
    let api = Api::with_config(pool, config).await;
    let guess = "as_test_0000000000000000000000000000000000";
    // Guess until refused: a burst of 20 failures, plus the 2 a second that refill meanwhile.
    let started = std::time::Instant::now();
    let mut failures = 0;
    loop {
        let status = from_address(&api, "192.0.2.7:5000", Method::GET, "/api/v1/webhooks", guess, Body::empty()).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        failures += 1;
        assert!(failures <= 60, "guessing is never slowed down");
    }
    let refilled = (started.elapsed().as_secs_f64() * 2.0).ceil() as usize;
    assert!((20..=20 + refilled).contains(&failures), "{failures} failures before the first 429");
    assert_eq!(
        from_address(&api, "192.0.2.7:5000", Method::GET, "/api/v1/webhooks", guess, Body::empty()).await,
        StatusCode::TOO_MANY_REQUESTS,
        "and the address stays refused"
    );
    // Another address is not held back.
    let other = from_address(&api, "198.51.100.9:5000", Method::GET, "/api/v1/webhooks", guess, Body::empty()).await;
    assert_eq!(other, StatusCode::UNAUTHORIZED);

    // A batch of four events takes four of the key's five tokens: the next batch of two is refused.
    let batch = |n: usize| {
        let events: Vec<Value> = (0..n).map(|i| call_completed(&format!("evt_rl{n}x{i}"))).collect();
        Body::from(json!({ "events": events }).to_string())
    };
    let key = api.key.clone();
    let four = from_address(&api, "203.0.113.1:1", Method::POST, "/api/v1/events/batch", &key, batch(4)).await;
    assert_eq!(four, StatusCode::OK);
    let two = from_address(&api, "203.0.113.1:1", Method::POST, "/api/v1/events/batch", &key, batch(2)).await;
    assert_eq!(two, StatusCode::TOO_MANY_REQUESTS);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn an_api_query_never_outlives_its_statement_timeout(pool: PgPool) {
    let config = ApiConfig { statement_timeout: Duration::from_millis(200), ..api_config() };
    let api = Api::with_config(pool.clone(), config).await;
    // Someone holds the webhooks table: the listing would wait for ever without a statement timeout.
    let mut blocker = pool.begin().await.expect("tx");
    sqlx::query("LOCK TABLE webhooks IN ACCESS EXCLUSIVE MODE").execute(&mut *blocker).await.expect("lock");
    let started = std::time::Instant::now();
    let (status, headers, body) = api.raw(Method::GET, "/api/v1/webhooks", Some(&api.key), Body::empty()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    blocker.rollback().await.expect("rollback");
    assert_eq!(api.call(Method::GET, "/api/v1/webhooks", None).await.0, StatusCode::OK);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_rare_status_is_found_through_bounded_pages_and_time_ranges_narrow_the_scan(pool: PgPool) {
    let api = Api::new(pool).await;
    api.webhook("https://example.com/a").await;
    assert_eq!(api.event(call_completed("evt_scan")).await.0, StatusCode::CREATED);
    // 6,000 more finished deliveries of that event, one a second from 2020-01-01 (ids carry their time, as real
    // ones do), more than one request examines; the three oldest failed.
    let start = chrono::DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z").expect("time").timestamp_millis();
    let ids: Vec<String> =
        (1..=6000i64).map(|g| courier_core::DeliveryId::first_at(start + g * 1000).as_str().to_owned()).collect();
    let seconds: Vec<i64> = (1..=6000).collect();
    sqlx::query(
        "INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status,
                                 attempt_count, max_attempts, created_at)
         SELECT n.id, d.tenant_id, d.environment, d.event_id, d.webhook_id, d.event_type, d.call_id,
                CASE WHEN n.g <= 3 THEN 'failed' ELSE 'succeeded' END, 1, d.max_attempts,
                '2020-01-01'::timestamptz + n.g * interval '1 second'
         FROM (SELECT * FROM deliveries LIMIT 1) d, unnest($1::text[], $2::int8[]) AS n(id, g)",
    )
    .bind(&ids)
    .bind(&seconds)
    .execute(&api.pool)
    .await
    .expect("history");
    let mut found = Vec::new();
    let mut cursor: Option<String> = None;
    let mut requests = 0;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/api/v1/deliveries?status=failed&limit=10&cursor={c}"),
            None => "/api/v1/deliveries?status=failed&limit=10".to_owned(),
        };
        let (status, page) = api.call(Method::GET, &uri, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        requests += 1;
        found.extend(page["data"].as_array().expect("data").iter().map(|d| d["id"].as_str().expect("id").to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(requests < 10, "pages must end");
    }
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(requests >= 2, "the first request stopped at its window and said where to go on");

    // A time range is an id range too: only the matching stretch is read, and the answer is exact.
    let (status, page) =
        api.call(Method::GET, "/api/v1/deliveries?since=2020-01-01T00:00:01Z&until=2020-01-01T00:00:03Z", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["data"].as_array().map(Vec::len), Some(2), "{page}");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn bulk_replay_never_replays_a_queued_replay_or_a_delivery_replayed_before(pool: PgPool) {
    let api = Api::new(pool).await;
    api.webhook("https://example.com/a").await;
    for i in 0..3 {
        assert_eq!(api.event(call_completed(&format!("evt_r{i}"))).await.0, StatusCode::CREATED);
    }
    sqlx::query("UPDATE deliveries SET status = 'failed', next_attempt_at = NULL")
        .execute(&api.pool)
        .await
        .expect("fail");
    let replay_all = |status: &'static str| {
        let api = api.clone();
        async move {
            let (code, job) =
                api.call(Method::POST, "/api/v1/deliveries/replay", Some(json!({"status": status}))).await;
            assert_eq!(code, StatusCode::ACCEPTED, "{job}");
            while courier_scheduler::replay::advance(&api.pool).await.expect("advance") {}
            let (_, done) =
                api.call(Method::GET, &format!("/api/v1/replays/{}", job["id"].as_str().expect("id")), None).await;
            done["replayed"].as_u64().expect("replayed")
        }
    };
    assert_eq!(replay_all("failed").await, 3, "the three failed deliveries");
    assert_eq!(replay_all("failed").await, 0, "each was replayed already");
    assert_eq!(replay_all("pending").await, 0, "their replays are still queued: not replayed again");
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries").fetch_one(&api.pool).await.expect("count");
    assert_eq!(total, 6);
}

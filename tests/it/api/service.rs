//! The API as a service: authentication, scopes, rate limits, errors, health, OpenAPI, and the database going away.

use super::*;

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
    let (state, loops) = AppState::new(pool.clone(), MasterKey::from_bytes(&[1u8; 32]), api_config());
    // The test owns the ingest dispatcher; it ends when the router is dropped.
    loops.spawn(state.components.clone(), tokio_util::sync::CancellationToken::new());
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
    // The portal answers the same with a page: 503 and when to come back.
    let signed_in = axum::http::Request::get("/portal")
        .header("cookie", "courier_portal=ps_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
        .body(Body::empty())
        .expect("request");
    let page = tower::ServiceExt::oneshot(api.router.clone(), signed_in).await.expect("response");
    assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.headers().contains_key("retry-after"), "{:?}", page.headers());
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
        ("/api/v1/portal/sessions", vec!["post"]),
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
    // The rule for custom header names is in the schema, so a schema-valid request is never refused for one.
    for body in ["CreateWebhook", "UpdateWebhook"] {
        let headers = &doc["components"]["schemas"][body]["properties"]["headers"];
        assert_eq!(headers["maxProperties"], 10, "{body}: {headers}");
        let names = &headers["propertyNames"];
        assert!(names["pattern"].as_str().is_some_and(|p| p.starts_with("^[")), "{body}: {headers}");
        let reserved = names["not"]["pattern"].as_str().unwrap_or_default();
        assert!(
            reserved.contains("[Hh][Oo][Ss][Tt]") && reserved.contains("[Ww][Ee][Bb][Hh][Oo][Oo][Kk]"),
            "{reserved}"
        );
        assert_eq!(headers["additionalProperties"]["maxLength"], 1024, "{body}: {headers}");
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
async fn failed_logins_never_lock_out_a_valid_key_from_the_same_address(pool: PgPool) {
    let config = ApiConfig { rate_limit: Some(RateLimit { per_second: 100.0, burst: 100.0 }), ..api_config() };
    let api = Api::with_config(pool, config).await;
    let guess = "as_test_0000000000000000000000000000000000";
    let balancer = "192.0.2.1:5000";
    let mut refused = 0;
    let started = std::time::Instant::now();
    for _ in 0..40 {
        let (status, message) = list_from(&api, balancer, None, Some(guess)).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
            let message = message.expect("message");
            assert!(message.contains("failed authentications"), "the 429 says which limit: {message}");
        } else {
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
    }
    // A burst of 20, and 2 a second refill meanwhile (more on a loaded machine, which takes longer over the 40).
    let refilled = (started.elapsed().as_secs_f64() * 2.0).ceil() as usize;
    assert!(refused > 0, "guessing from one address is slowed down");
    assert!(refused + 20 + refilled >= 40, "{refused} of 40 refused, {refilled} refilled meanwhile");
    // Every tenant's valid key still works from the address the guesses came from.
    let other = api.other_tenant_key().await;
    assert_eq!(list_from(&api, balancer, None, Some(&other)).await.0, StatusCode::OK);
    assert_eq!(list_from(&api, balancer, None, Some(&api.key)).await.0, StatusCode::OK);
    // No credentials at all guess nothing: 401, never 429, even from the spent address.
    assert_eq!(list_from(&api, balancer, None, None).await.0, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn behind_a_trusted_proxy_forwarded_clients_are_limited_apart(pool: PgPool) {
    let config = ApiConfig {
        rate_limit: Some(RateLimit { per_second: 100.0, burst: 100.0 }),
        trusted_proxies: vec!["10.0.0.0/8".parse().expect("cidr")],
        ..api_config()
    };
    let api = Api::with_config(pool, config).await;
    let guess = "as_test_0000000000000000000000000000000000";
    let proxy = "10.1.2.3:40000";
    // Client A guesses through the proxy, and also claims to be client B in a header it wrote itself, until it is
    // refused (a burst of 20, plus what refills meanwhile on a slow machine).
    let mut guesses = 0;
    while list_from(&api, proxy, Some("198.51.100.2, 198.51.100.1"), Some(guess)).await.0
        != StatusCode::TOO_MANY_REQUESTS
    {
        guesses += 1;
        assert!(guesses <= 200, "client A is never refused");
    }
    assert!(guesses >= 20, "A's own burst of 20 first ({guesses})");
    let (b, _) = list_from(&api, proxy, Some("198.51.100.2"), Some(guess)).await;
    assert_eq!(b, StatusCode::UNAUTHORIZED, "client B is limited apart, whatever A wrote in its header");
    // From a peer that is not a trusted proxy, the header is not believed: the peer is the client.
    for _ in 0..25 {
        let _ = list_from(&api, "203.0.113.5:1", Some("198.51.100.3"), Some(guess)).await;
    }
    let (c, _) = list_from(&api, proxy, Some("198.51.100.3"), Some(guess)).await;
    assert_eq!(c, StatusCode::UNAUTHORIZED, "a spoofed header charged the spoofer, not the named client");
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

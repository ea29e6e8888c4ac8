//! `/api/v1/webhooks`: creating, listing, changing and refusing webhooks as the guide shows them.

use super::*;

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

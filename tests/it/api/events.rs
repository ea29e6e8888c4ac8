//! `/api/v1/events`: ingest singly and in batches, idempotency, validation, and concurrent requests.

use super::*;

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

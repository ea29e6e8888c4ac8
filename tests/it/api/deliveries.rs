//! `/api/v1/deliveries`: the delivery log, its filters and pages, tenant isolation, and replay.

use super::*;

// Long because each filter is asserted against the same small log, and the replay against what the log showed.
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
    while !courier_scheduler::replay::advance(&api.pool).await.expect("advance").is_idle() {}
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
    while !courier_scheduler::replay::advance(&api.pool).await.expect("advance").is_idle() {}
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
            while !courier_scheduler::replay::advance(&api.pool).await.expect("advance").is_idle() {}
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

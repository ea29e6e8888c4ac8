//! Beyond one PostgreSQL server, against a real primary and streaming standby: the primary found wherever
//! `DATABASE_URL` lists it, reads served by a fit replica and by the primary when it lags or stops, and the pools
//! following a failover while the API answers 503 (never 500) and recovers on its own.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use courier_store::cluster::{Database, Endpoints};
use serde_json::Value;
use sqlx::PgPool;

use crate::api::{Api, call_completed};
use crate::pg_pair::Pair;

async fn in_recovery(pool: &PgPool) -> bool {
    sqlx::query_scalar("SELECT pg_is_in_recovery()").fetch_one(pool).await.expect("ask the server")
}

async fn connect(primary: &str, replicas: Option<&str>, max_lag: Duration) -> Database {
    let endpoints =
        Endpoints { primary, replicas, max_lag, max_connections: 8, acquire_timeout: Duration::from_secs(2) };
    Database::connect(&endpoints).await.expect("a primary among the hosts")
}

/// Polls `check` every 50 ms until it holds; fails naming `what` after `limit`. Returns how long it took.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let begun = Instant::now();
    while !check().await {
        assert!(begun.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    begun.elapsed()
}

fn count(page: &Value) -> usize {
    page["data"].as_array().map_or(0, Vec::len)
}

async fn listed(api: &Api) -> usize {
    let (status, page) = api.call(Method::GET, "/api/v1/deliveries", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    count(&page)
}

// Long because the replica is followed through its three states (fit, lagging, stopped) on one pair of servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_a_fit_replica_and_to_the_primary_when_it_lags_or_stops() {
    let pair = Pair::start("replicas").await;
    // The standby is listed first: the writable host is found wherever it is listed.
    let db = connect(&pair.url_listing([1, 0]), Some(&pair.node_url(1)), Duration::from_secs(3)).await;
    assert!(!in_recovery(db.pool()).await, "the pool is on the primary");
    courier_store::MIGRATOR.run(db.pool()).await.expect("migrations");
    within(Duration::from_secs(5), "the replica becomes fit", || async { in_recovery(db.reader()).await }).await;

    let api = Api::on_database(&db).await;
    api.webhook("https://example.com/hook").await;
    assert_eq!(api.event(call_completed("evt_before")).await.0, StatusCode::CREATED);
    within(Duration::from_secs(5), "the replica shows the first delivery", || async { listed(&api).await == 1 }).await;

    // Replay paused: the replica keeps serving what it has while within the allowed lag, so a log page misses the
    // new delivery (the replica served it), while reading that delivery by id finds it on the primary.
    pair.pause_replay(true).await;
    let (status, accepted) = api.event(call_completed("evt_after")).await;
    assert_eq!(status, StatusCode::CREATED, "{accepted}");
    let stale = listed(&api).await;
    assert_eq!(stale, 1, "a log page read on the paused replica does not see the new delivery");
    let new_id: String = sqlx::query_scalar("SELECT id FROM deliveries ORDER BY id DESC LIMIT 1")
        .fetch_one(db.pool())
        .await
        .expect("deliveries on the primary");
    let (status, one) = api.call(Method::GET, &format!("/api/v1/deliveries/{new_id}"), None).await;
    assert_eq!(status, StatusCode::OK, "one delivery the replica misses is read on the primary: {one}");
    // Past the allowed lag the replica is skipped, and the primary serves the page.
    within(Duration::from_secs(6), "a replica past its lag is skipped", || async { listed(&api).await == 2 }).await;
    assert!(!in_recovery(db.reader()).await);

    pair.pause_replay(false).await;
    within(Duration::from_secs(5), "the caught-up replica serves again", || async { in_recovery(db.reader()).await })
        .await;

    pair.node(1).stop().expect("the replica stops");
    let fell_back = within(Duration::from_secs(3), "reads leave a stopped replica", || async {
        std::ptr::eq(db.reader(), db.pool())
    })
    .await;
    assert!(fell_back <= Duration::from_millis(1500), "reads fell back within a second or so: {fell_back:?}");
    assert_eq!(listed(&api).await, 2, "the primary serves the log");
}

/// Posts one event: its id when accepted, `None` when refused with 503 and `Retry-After`; anything else fails.
async fn post(api: &Api, id: &str) -> Option<String> {
    let body = axum::body::Body::from(call_completed(id).to_string());
    let (status, headers, value) = api.raw(Method::POST, "/api/v1/events", Some(&api.key), body).await;
    match status {
        StatusCode::CREATED => Some(id.to_owned()),
        StatusCode::SERVICE_UNAVAILABLE => {
            assert!(headers.contains_key("retry-after"), "a 503 says when to retry");
            None
        }
        other => panic!("{other} during a failover: {value}"),
    }
}

/// Posts events for `how_long`: the ids accepted, and how many were refused.
async fn post_for(api: &Api, prefix: &str, how_long: Duration) -> (Vec<String>, usize) {
    let begun = Instant::now();
    let (mut accepted, mut refused) = (Vec::new(), 0);
    let mut n = 0;
    while begun.elapsed() < how_long {
        n += 1;
        match post(api, &format!("{prefix}_{n}")).await {
            Some(id) => accepted.push(id),
            None => refused += 1,
        }
    }
    (accepted, refused)
}

/// Posts events until one is accepted (for at most 15 s): the ids accepted, and how many were refused.
async fn post_until_accepted(api: &Api, prefix: &str) -> (Vec<String>, usize) {
    let begun = Instant::now();
    let mut refused = 0;
    loop {
        if let Some(id) = post(api, &format!("{prefix}_{refused}")).await {
            return (vec![id], refused);
        }
        refused += 1;
        assert!(begun.elapsed() < Duration::from_secs(15), "the API did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// Long because a failover is one story: before, during (503s), after (recovered, nothing lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_follows_a_failover_answering_503_meanwhile_and_loses_nothing() {
    let mut pair = Pair::start("failover").await;
    let db = connect(&pair.url(), None, Duration::from_secs(5)).await;
    courier_store::MIGRATOR.run(db.pool()).await.expect("migrations");
    let api = Api::on_database(&db).await;
    api.webhook("https://example.com/hook").await;
    for i in 0..20 {
        assert_eq!(api.event(call_completed(&format!("evt_{i}"))).await.0, StatusCode::CREATED);
    }

    pair.kill_primary();
    // The postmaster is dead. A backend it left may still finish a request (and its commit still reaches the
    // standby, synchronously); after that every request is refused with 503 and Retry-After, never a 500.
    let (mut accepted, refused) = post_for(&api, "evt_down", Duration::from_secs(2)).await;
    assert!(refused > 0, "with no primary, requests are refused");
    pair.promote_standby().await;
    let promoted = Instant::now();
    let (after, _) = post_until_accepted(&api, "evt_after").await;
    accepted.extend(after);
    eprintln!("failover: recovered {:?} after the promotion", promoted.elapsed());
    assert!(promoted.elapsed() <= Duration::from_secs(10), "recovered within 10 s: {:?}", promoted.elapsed());
    assert!(!in_recovery(db.pool()).await, "the process pool is on the new primary");
    let port: i32 = sqlx::query_scalar("SELECT inet_server_port()").fetch_one(db.pool()).await.expect("port");
    assert_eq!(port as u16, pair.node(pair.primary()).port().expect("port"));
    let before = (0..20).map(|i| format!("evt_{i}"));
    for id in before.chain(accepted) {
        let (status, _) = api.call(Method::GET, &format!("/api/v1/events/{id}"), None).await;
        assert_eq!(status, StatusCode::OK, "{id}, accepted before the promotion, survived it");
    }

    // The old primary comes back as a standby, and a second failover goes back.
    pair.reattach_old_primary().await;
    assert_eq!(api.event(call_completed("evt_synchronous")).await.0, StatusCode::CREATED);
    pair.kill_primary();
    let (_, refused) = post_for(&api, "evt_down_again", Duration::from_secs(2)).await;
    assert!(refused > 0, "with no primary, requests are refused");
    pair.promote_standby().await;
    let promoted = Instant::now();
    post_until_accepted(&api, "evt_back").await;
    assert!(promoted.elapsed() <= Duration::from_secs(10), "recovered within 10 s: {:?}", promoted.elapsed());
    let (status, _) = api.call(Method::GET, "/api/v1/events/evt_synchronous", None).await;
    assert_eq!(status, StatusCode::OK, "a synchronous commit survives the second failover");
}

/// What a session on a read-only server meets (a standby behind a proxy, a name that moved): `25006`, answered 503
/// with `Retry-After`, never a 500, and the session is not used again. Made here with
/// `default_transaction_read_only` on the sessions the API opens, then off for the ones it opens next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_session_is_a_503_and_is_not_used_again() {
    let url = crate::support::fresh_database().await;
    let db = connect(&url, None, Duration::from_secs(5)).await;
    courier_store::MIGRATOR.run(db.pool()).await.expect("migrations");
    let api = Api::on_database(&db).await;
    // A session of the test's own, opened while writes are allowed, so it can allow them again.
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.expect("connect");
    let name: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&mut admin).await.expect("name");
    let read_only = |on: bool| {
        let sql = if on { "SET default_transaction_read_only = on" } else { "RESET default_transaction_read_only" };
        sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE {name} {sql}")))
    };
    read_only(true).execute(&mut admin).await.expect("alter database");
    let create = || async {
        let body = serde_json::json!({"url": "https://example.com/hook"}).to_string();
        api.raw(Method::POST, "/api/v1/webhooks", Some(&api.key), axum::body::Body::from(body)).await
    };
    let (status, headers, value) = create().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{value}");
    assert!(headers.contains_key("retry-after"), "a 503 says when to retry");
    let webhooks: i64 = sqlx::query_scalar("SELECT count(*) FROM webhooks").fetch_one(&mut admin).await.expect("count");
    assert_eq!(webhooks, 0, "nothing was written");

    // The server is writable again for new sessions; the read-only one the API used is closed, not reused.
    read_only(false).execute(&mut admin).await.expect("alter database");
    let (status, _, value) = create().await;
    assert_eq!(status, StatusCode::CREATED, "the next request runs on a fresh session: {value}");
}

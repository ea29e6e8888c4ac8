//! The `logs` scenario: ten million finished deliveries of one tenant, then delivery-log pages through the API with
//! each filter.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use crate::measure::percentile;
use crate::process::cli;
use crate::receiver::Receiver;
use crate::send::send_singles;
use crate::{Args, Setup, setup};

/// A tenant with `log_rows` finished deliveries over the last 30 days (ids carry their times, as real ones do;
/// 97 % succeeded, 2 % failed, 1 % cancelled, six event types, a call id shared by ten rows), then page requests
/// through the real API, timed per filter: the newest page and the pages after it, 40 requests each.
pub async fn logs(cluster: &str, a: &Args) -> Value {
    let receiver = Receiver::start(None).await;
    let s = setup(cluster, "logs", vec![receiver], a.worker_concurrency).await;
    send_singles(&s.courier.base, &s.emitter, 1, 1, "l", Arc::default()).await;
    let rows = a.log_rows as i64;
    let generated = Instant::now();
    let size = generate_history(&s.url, rows).await;
    let generate_s = generated.elapsed().as_secs_f64();
    let pages = page_latencies(&s, rows).await;
    s.teardown().await;
    json!({"rows": rows, "generate_s": generate_s, "deliveries_size": size, "pages": pages})
}

/// `rows` finished deliveries of the one tenant spread over 30 days, written set-based; returns the table's size.
pub async fn generate_history(url: &str, rows: i64) -> String {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.expect("connect");
    create_id_function(&mut conn).await;
    sqlx::query(
        "INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status,
                                 attempt_count, max_attempts, created_at, updated_at)
         SELECT pg_temp.bench_id(t.ms, (random() * 1e15)::bigint), d.tenant_id, d.environment, d.event_id,
                d.webhook_id, (ARRAY['call.started','call.connected','call.completed','call.failed',
                                     'call.disconnected','call.agent.changed'])[1 + g % 6],
                'call-' || (g / 10), CASE WHEN g % 100 < 97 THEN 'succeeded' WHEN g % 100 < 99 THEN 'failed'
                                          ELSE 'cancelled' END,
                1, d.max_attempts, to_timestamp(t.ms / 1000.0), to_timestamp(t.ms / 1000.0)
         FROM (SELECT * FROM deliveries LIMIT 1) d, generate_series(1, $1) g,
              LATERAL (SELECT (extract(epoch FROM now() - interval '30 days') * 1000)::bigint
                              + g * (30 * 86400000::bigint / $1) AS ms) t",
    )
    .bind(rows)
    .execute(&mut conn)
    .await
    .expect("history");
    sqlx::query("VACUUM ANALYZE deliveries").execute(&mut conn).await.expect("analyze");
    sqlx::query_scalar("SELECT pg_size_pretty(pg_total_relation_size('deliveries'))")
        .fetch_one(&mut conn)
        .await
        .expect("size")
}

/// `pg_temp.bench_id(ms, r)`: the id of unix millisecond `ms` with random bits `r`, in the shape of courier_id (and
/// DeliveryId), for this connection.
pub async fn create_id_function(conn: &mut sqlx::PgConnection) {
    sqlx::query(
        r#"CREATE FUNCTION pg_temp.bench_id(ms bigint, r bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$
            SELECT 'dlv_' || string_agg(substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ',
                       (CASE WHEN i < 10 THEN (ms >> (5 * (9 - i))) & 31 ELSE (r >> (5 * (25 - i))) & 31 END)::int + 1, 1),
                   '' ORDER BY i)
            FROM generate_series(0, 25) i $$"#,
    )
    .execute(&mut *conn)
    .await
    .expect("function");
}

/// p50 and p99 of 40 page requests per filter, following cursors, through the API.
async fn page_latencies(s: &Setup, rows: i64) -> serde_json::Map<String, Value> {
    let admin = reader_key(&s.url);
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let mid = chrono::Utc::now() - chrono::Duration::days(15);
    let filters = [
        ("none", String::new()),
        ("status=failed", "status=failed".to_owned()),
        ("status=cancelled", "status=cancelled".to_owned()),
        ("status=delivering", "status=delivering".to_owned()),
        ("event_type=call.failed", "event_type=call.failed".to_owned()),
        ("call_id", format!("call_id=call-{}", rows / 20)),
        (
            "since+until (1 h, 15 d ago)",
            format!(
                "since={}&until={}",
                mid.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                (mid + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ),
    ];
    let mut pages = serde_json::Map::new();
    for (name, query) in filters {
        let latencies_and_rows = pages_of(&http, &s.courier.base, &admin, name, &query).await;
        let (latencies, returned) = latencies_and_rows;
        pages.insert(
            name.to_owned(),
            json!({"p50_ms": percentile(&latencies, 50.0), "p99_ms": percentile(&latencies, 99.0),
                   "rows_per_page": returned as f64 / latencies.len() as f64}),
        );
    }
    pages
}

/// Sorted latencies (ms) of 40 pages of one filter, and the rows they returned.
async fn pages_of(http: &reqwest::Client, base: &str, key: &str, name: &str, query: &str) -> (Vec<f64>, usize) {
    {
        let mut latencies = Vec::new();
        let mut returned = 0usize;
        let mut cursor: Option<String> = None;
        for _ in 0..40 {
            let mut url = format!("{base}/api/v1/deliveries?limit=50&{query}");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let begun = Instant::now();
            let res = http.get(url).bearer_auth(key).send().await.expect("page");
            assert_eq!(res.status().as_u16(), 200, "{name}");
            let page: Value = serde_json::from_str(&res.text().await.expect("body")).expect("json");
            latencies.push(begun.elapsed().as_secs_f64() * 1000.0);
            returned += page["data"].as_array().map_or(0, Vec::len);
            // At the end (no cursor) the next request starts again from the newest page.
            cursor = page["next_cursor"].as_str().map(str::to_owned);
        }
        latencies.sort_by(f64::total_cmp);
        (latencies, returned)
    }
}

/// A key of the benchmark's one tenant that may read its delivery log.
pub fn reader_key(url: &str) -> String {
    let args =
        ["keys", "create", "--tenant", &tenant_of(url), "--env", "test", "--scopes", "deliveries:read", "--json"];
    cli(url, &args)["key"].as_str().expect("key").to_owned()
}

/// The id of the benchmark's one tenant.
pub fn tenant_of(url: &str) -> String {
    // One JSON object a line; the benchmark's database holds one tenant.
    cli(url, &["tenants", "list", "--json"])["id"].as_str().expect("a tenant").to_owned()
}

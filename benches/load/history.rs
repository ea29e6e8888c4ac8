//! The `history` scenario: a database holding many tenants' finished deliveries and their attempts over 30 days,
//! then what history costs: the claim, a large tenant's log pages with each filter, a bulk-replay dry run,
//! deleting one day (today's retention, by `DELETE`) and the database's size.
//!
//! The baseline for partitioned history (SCALING.md): the same figures, measured again once a day is a partition.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use crate::measure::{claim_cost, percentile};
use crate::process::cli;
use crate::receiver::Receiver;
use crate::send::send_singles;
use crate::{Args, setup};

/// Tenants in the generated history; the benchmark's own tenant is the large one, with a tenth of all rows.
const TENANTS: i64 = 1000;

// Long because the scenario is one sequence of measurements over one generated history, each reported by name.
pub async fn history(cluster: &str, a: &Args) -> Value {
    let receiver = Receiver::start(None).await;
    let s = setup(cluster, "history", vec![receiver], a.worker_concurrency).await;
    send_singles(&s.courier.base, &s.emitter, 1, 1, "h", Arc::default()).await;
    let rows = a.history_rows as i64;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&s.url).await.expect("connect");
    let (tenant,): (uuid::Uuid,) =
        sqlx::query_as("SELECT tenant_id FROM deliveries LIMIT 1").fetch_one(&mut conn).await.expect("tenant");
    let generated = Instant::now();
    generate(&mut conn, rows).await;
    let generate_s = generated.elapsed().as_secs_f64();
    let claim_ms = claim_cost(&s.url).await;
    let scopes = "deliveries:read,deliveries:replay";
    let key = cli(
        &s.url,
        &["keys", "create", "--tenant", &tenant.to_string(), "--env", "test", "--scopes", scopes, "--json"],
    )["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let mut pages = serde_json::Map::new();
    let mid = chrono::Utc::now() - chrono::Duration::days(15);
    let hour = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for (name, query) in [
        ("none", String::new()),
        ("status=failed", "status=failed".to_owned()),
        ("event_type=call.failed", "event_type=call.failed".to_owned()),
        ("call_id", format!("call_id=call-{}", rows / 20)),
        (
            "since+until (1 h, 15 d ago)",
            format!("since={}&until={}", hour(mid), hour(mid + chrono::Duration::hours(1))),
        ),
    ] {
        let latencies =
            time_requests(&http, &format!("{}/api/v1/deliveries?limit=50&{query}", s.courier.base), &key).await;
        pages.insert(
            name.into(),
            json!({"p50_ms": percentile(&latencies, 50.0), "p99_ms": percentile(&latencies, 99.0)}),
        );
    }
    let dry_run = {
        let body =
            json!({"status": "failed", "since": hour(chrono::Utc::now() - chrono::Duration::days(7)), "dry_run": true});
        let begun = Instant::now();
        let res = http
            .post(format!("{}/api/v1/deliveries/replay", s.courier.base))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("dry run");
        let ms = begun.elapsed().as_secs_f64() * 1000.0;
        let answer: Value = serde_json::from_str(&res.text().await.expect("body")).expect("json");
        json!({"ms": ms, "answer": answer})
    };
    let (size,): (String,) = sqlx::query_as("SELECT pg_size_pretty(pg_database_size(current_database()))")
        .fetch_one(&mut conn)
        .await
        .expect("size");
    let (deleted, delete_s) = delete_oldest_day(&mut conn).await;
    s.teardown().await;
    json!({"rows": rows, "tenants": TENANTS, "generate_s": generate_s, "database_size": size, "claim_ms": claim_ms,
           "large_tenant_pages": pages, "bulk_replay_dry_run": dry_run,
           "retention_one_day": {"deliveries_deleted": deleted, "seconds": delete_s, "how": "DELETE (attempts by cascade)"}})
}

/// Tenants, one webhook and one event each (copies of the benchmark's own), then `rows` finished deliveries over
/// 30 days with one attempt each, a tenth of them the benchmark tenant's; set-based SQL throughout.
async fn generate(conn: &mut sqlx::PgConnection, rows: i64) {
    crate::logs::create_id_function(conn).await;
    let webhook_columns = columns(conn, "webhooks").await;
    let event_columns = columns(conn, "events").await;
    let statements = [
        format!("INSERT INTO tenants (id, name) SELECT md5('t' || g)::uuid, 'bench ' || g FROM generate_series(1, {}) g", TENANTS - 1),
        format!(
            "INSERT INTO webhooks ({webhook_columns}) SELECT {} FROM webhooks w, generate_series(1, {}) g",
            replace(&webhook_columns, &[("id", "'wh_0' || lpad(upper(to_hex(g)), 25, '0')"), ("tenant_id", "md5('t' || g)::uuid")]),
            TENANTS - 1
        ),
        format!(
            "INSERT INTO events ({event_columns}) SELECT {} FROM events e, generate_series(1, {}) g",
            replace(&event_columns, &[("tenant_id", "md5('t' || g)::uuid")]),
            TENANTS - 1
        ),
        "INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status,
                                 attempt_count, max_attempts, created_at, updated_at)
         SELECT pg_temp.bench_id(t.ms, (random() * 1e15)::bigint), w.tenant_id, w.environment, e.id, w.id,
                (ARRAY['call.started','call.connected','call.completed','call.failed',
                       'call.disconnected','call.agent.changed'])[1 + g % 6],
                'call-' || (g / 10), CASE WHEN (g / 10) % 100 < 97 THEN 'succeeded' ELSE 'failed' END,
                1, w.max_attempts, to_timestamp(t.ms / 1000.0), to_timestamp(t.ms / 1000.0)
           FROM generate_series(1, $1) g
           CROSS JOIN LATERAL (SELECT (extract(epoch FROM now() - interval '30 days') * 1000)::bigint
                                      + g * (30 * 86400000::bigint / $1) AS ms) t
           JOIN LATERAL (SELECT CASE WHEN g % 10 = 0 THEN NULL ELSE md5('t' || (1 + g % 999))::uuid END AS tid) p ON true
           JOIN webhooks w ON w.tenant_id = COALESCE(p.tid, (SELECT tenant_id FROM deliveries LIMIT 1))
           JOIN events e ON e.tenant_id = w.tenant_id"
            .to_owned(),
        "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, signature_timestamp)
         SELECT id, 1, created_at, 12, CASE status WHEN 'succeeded' THEN 200 ELSE 500 END,
                extract(epoch FROM created_at)::bigint
           FROM deliveries WHERE NOT EXISTS (SELECT 1 FROM delivery_attempts a WHERE a.delivery_id = deliveries.id)"
            .to_owned(),
        "VACUUM ANALYZE".to_owned(),
    ];
    for sql in statements {
        let q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
        let q = if sql.contains("$1") { q.bind(rows) } else { q };
        q.execute(&mut *conn).await.unwrap_or_else(|e| panic!("{e}: {sql}"));
    }
}

/// The columns of `table` one may insert into (not generated), in order, comma-separated.
async fn columns(conn: &mut sqlx::PgConnection, table: &str) -> String {
    let (list,): (String,) = sqlx::query_as(
        "SELECT string_agg(column_name, ', ' ORDER BY ordinal_position) FROM information_schema.columns
          WHERE table_schema = 'public' AND table_name = $1 AND is_generated = 'NEVER'",
    )
    .bind(table)
    .fetch_one(conn)
    .await
    .expect("columns");
    list
}

/// A select list of `columns` with some columns replaced by expressions.
fn replace(columns: &str, with: &[(&str, &str)]) -> String {
    columns
        .split(", ")
        .map(|c| with.iter().find(|(name, _)| *name == c).map_or(c.to_owned(), |(_, expr)| (*expr).to_owned()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Today's retention of the oldest day, as one `DELETE` of its deliveries (attempts go by cascade).
async fn delete_oldest_day(conn: &mut sqlx::PgConnection) -> (u64, f64) {
    let begun = Instant::now();
    let done = sqlx::query(
        "DELETE FROM deliveries WHERE created_at < (SELECT min(created_at) FROM deliveries) + interval '1 day'",
    )
    .execute(&mut *conn)
    .await
    .expect("delete a day");
    (done.rows_affected(), begun.elapsed().as_secs_f64())
}

/// Sorted latencies (ms) of 40 requests for one URL, after one untimed.
async fn time_requests(http: &reqwest::Client, url: &str, key: &str) -> Vec<f64> {
    let mut latencies = Vec::new();
    for i in 0..=40 {
        let begun = Instant::now();
        let res = http.get(url).bearer_auth(key).send().await.expect("page");
        assert_eq!(res.status().as_u16(), 200, "{url}");
        let _ = res.text().await;
        if i > 0 {
            latencies.push(begun.elapsed().as_secs_f64() * 1000.0);
        }
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

//! The `history` scenario: a database holding many tenants' events, finished deliveries and their attempts over 30
//! days, one partition per day (migration 0015), then what history costs: the claim, a large tenant's log pages
//! with each filter, a bulk-replay dry run, the retention of one day, by dropping its partitions (what Courier
//! does) and by deleting its rows (what it did before, and still does for shorter per-tenant retention), and the
//! database's size.

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
    let retention = retention_of_one_day(&s.url).await;
    s.teardown().await;
    json!({"rows": rows, "tenants": TENANTS, "generate_s": generate_s, "database_size": size, "claim_ms": claim_ms,
           "large_tenant_pages": pages, "bulk_replay_dry_run": dry_run,
           "retention_one_day": retention})
}

/// Day partitions for the 31 days before now (the fresh database's legacy partitions are empty and go), tenants
/// and one webhook each (copies of the benchmark's own), then `rows` events over 30 days, each with one finished
/// delivery with one attempt, a tenth of them the benchmark tenant's; set-based SQL throughout.
async fn generate(conn: &mut sqlx::PgConnection, rows: i64) {
    crate::logs::create_id_function(conn).await;
    let webhook_columns = columns(conn, "webhooks").await;
    let statements = [
        "DROP TABLE events_legacy, deliveries_legacy, delivery_attempts_legacy".to_owned(),
        "SELECT courier_create_partitions(now() - interval '31 days', now())".to_owned(),
        format!("INSERT INTO tenants (id, name) SELECT md5('t' || g)::uuid, 'bench ' || g FROM generate_series(1, {}) g", TENANTS - 1),
        format!(
            "INSERT INTO webhooks ({webhook_columns}) SELECT {} FROM webhooks w, generate_series(1, {}) g",
            replace(&webhook_columns, &[("id", "'wh_0' || lpad(upper(to_hex(g)), 25, '0')"), ("tenant_id", "md5('t' || g)::uuid")]),
            TENANTS - 1
        ),
        // One row per generated event: its time, tenant, webhook and type.
        "CREATE TEMP TABLE gen AS
         SELECT g, to_timestamp(t.ms / 1000.0) AS at, t.ms, w.tenant_id, w.environment, w.id AS webhook_id, w.max_attempts,
                (ARRAY['call.started','call.connected','call.completed','call.failed',
                       'call.disconnected','call.agent.changed'])[1 + g % 6] AS event_type
           FROM generate_series(1, $1) g
           CROSS JOIN LATERAL (SELECT (extract(epoch FROM now() - interval '30 days') * 1000)::bigint
                                      + g * (30 * 86400000::bigint / $1) AS ms) t
           JOIN LATERAL (SELECT CASE WHEN g % 10 = 0 THEN NULL ELSE md5('t' || (1 + g % 999))::uuid END AS tid) p ON true
           JOIN webhooks w ON w.tenant_id = COALESCE(p.tid, (SELECT tenant_id FROM deliveries LIMIT 1))"
            .to_owned(),
        "INSERT INTO event_keys (tenant_id, environment, id, received_at)
         SELECT tenant_id, environment, 'evt_gen' || g, at FROM gen"
            .to_owned(),
        "INSERT INTO events (tenant_id, id, environment, event_type, call_id, created, data, request_hash, received_at)
         SELECT tenant_id, 'evt_gen' || g, environment, event_type, 'call-' || (g / 10), extract(epoch FROM at)::bigint,
                jsonb_build_object('call_id', 'call-' || (g / 10), 'agent_id', 'agent-7', 'status', 'completed'),
                '\\x00', at
           FROM gen"
            .to_owned(),
        "INSERT INTO deliveries (id, tenant_id, environment, event_id, webhook_id, event_type, call_id, status,
                                 attempt_count, max_attempts, created_at, updated_at)
         SELECT pg_temp.bench_id(ms, (random() * 1e15)::bigint), tenant_id, environment, 'evt_gen' || g, webhook_id,
                event_type, 'call-' || (g / 10), CASE WHEN (g / 10) % 100 < 97 THEN 'succeeded' ELSE 'failed' END,
                1, max_attempts, at, at
           FROM gen"
            .to_owned(),
        "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, signature_timestamp)
         SELECT id, 1, created_at, 12, CASE status WHEN 'succeeded' THEN 200 ELSE 500 END,
                extract(epoch FROM created_at)::bigint
           FROM deliveries WHERE event_id LIKE 'evt_gen%'"
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

/// The retention of one day, two ways on the same history: one day by dropping it whole, as Courier does
/// (`courier_scheduler::history`: its checks and its three partitions, then, apart, its keys), and the next by
/// deleting its rows in one transaction, as Courier did before partitioning and still does for a tenant whose
/// retention is shorter than the longest.
async fn retention_of_one_day(url: &str) -> Value {
    use courier_scheduler::history::{self, Dropped};
    let pool = sqlx::PgPool::connect(url).await.expect("pool");
    // The two full days before today (the oldest is partial, and Courier's own retention may be dropping it).
    let days = history::days_before(&pool, chrono::Utc::now()).await.expect("days");
    let (oldest, next) = (&days[days.len() - 2], &days[days.len() - 1]);
    let rows = |day: &history::Day| {
        let table = day.suffix.table("deliveries");
        let pool = pool.clone();
        async move {
            let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&pool)
                .await
                .expect("count");
            n
        }
    };
    let dropped_rows = rows(oldest).await;
    // Courier's own retention, in the serve under test, may hold the drop's advisory lock or a lock the drop needs
    // (it is dropping the partial oldest day): `Busy` means what it means there, try again shortly. Only the
    // successful try is timed.
    let mut tries = 0;
    let drop_s = loop {
        let begun = Instant::now();
        match history::drop_partitions(&pool, oldest).await.expect("drop") {
            Dropped::Dropped(_) => break begun.elapsed().as_secs_f64(),
            Dropped::Busy if tries < 50 => tries += 1,
            Dropped::Busy => panic!("the drop found its locks taken 50 times in a row"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let begun = Instant::now();
    let keys = history::forget_keys(&pool, oldest.lower, oldest.upper).await.expect("keys");
    let keys_s = begun.elapsed().as_secs_f64();
    let deleted_rows = rows(next).await;
    let begun = Instant::now();
    let mut tx = pool.begin().await.expect("begin");
    for sql in [
        "WITH d AS (DELETE FROM deliveries WHERE id >= courier_id_floor('dlv_', $1) AND id < courier_id_floor('dlv_', $2)
                    RETURNING id)
         DELETE FROM delivery_attempts a USING d WHERE a.delivery_id = d.id",
        "WITH k AS (DELETE FROM event_keys WHERE received_at >= $1 AND received_at < $2
                    RETURNING tenant_id, environment, id, received_at)
         DELETE FROM events e USING k WHERE e.tenant_id = k.tenant_id AND e.environment = k.environment
                                        AND e.id = k.id AND e.received_at = k.received_at",
    ] {
        sqlx::query(sql).bind(next.lower).bind(next.upper).execute(&mut *tx).await.expect("delete a day");
    }
    tx.commit().await.expect("commit");
    let delete_s = begun.elapsed().as_secs_f64();
    json!({"drop": {"day": oldest.suffix.as_str(), "deliveries": dropped_rows, "seconds": drop_s, "busy_tries": tries,
                    "keys_forgotten_after": keys, "keys_seconds": keys_s},
           "delete": {"day": next.suffix.as_str(), "deliveries": deleted_rows, "seconds": delete_s}})
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

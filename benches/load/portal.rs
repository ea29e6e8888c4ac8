//! The `portal` scenario: a tenant with a million finished deliveries over 30 days, then every portal page timed
//! through the real server (a session minted through the API, its cookie on each request).

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use crate::logs::{generate_history, tenant_of};
use crate::measure::percentile;
use crate::process::cli;
use crate::receiver::Receiver;
use crate::send::send_singles;
use crate::{Args, setup};

/// What every page must stay under (issue #14), at p99 of the requests here.
const TARGET_MS: f64 = 50.0;
const REQUESTS: usize = 40;

pub async fn portal(cluster: &str, a: &Args) -> Value {
    let receiver = Receiver::start(None).await;
    let s = setup(cluster, "portal", vec![receiver], a.worker_concurrency).await;
    send_singles(&s.courier.base, &s.emitter, 1, 1, "p", Arc::default()).await;
    let rows = a.portal_rows as i64;
    let generated = Instant::now();
    let size = generate_history(&s.url, rows).await;
    count_hours(&s.url).await;
    let generate_s = generated.elapsed().as_secs_f64();
    let scopes = "webhooks:read,webhooks:write,deliveries:read,deliveries:replay";
    let key =
        cli(&s.url, &["keys", "create", "--tenant", &tenant_of(&s.url), "--env", "test", "--scopes", scopes, "--json"])
            ["key"]
            .as_str()
            .expect("key")
            .to_owned();
    let http =
        reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let cookie = sign_in(&http, &s.courier.base, &key).await;
    let (webhook, delivery, failed) = ids(&s.url).await;
    let mid = (chrono::Utc::now() - chrono::Duration::days(15)).format("%Y-%m-%dT%H:%M").to_string();
    let day_ago = (chrono::Utc::now() - chrono::Duration::days(1)).format("%Y-%m-%dT%H:%M").to_string();
    let pages = [
        ("overview", "/portal".to_owned()),
        ("webhook", format!("/portal/webhooks/{webhook}")),
        ("log", "/portal/deliveries".to_owned()),
        ("log status=failed", "/portal/deliveries?status=failed".to_owned()),
        ("log event_type", "/portal/deliveries?event_type=call.failed".to_owned()),
        ("log call_id", format!("/portal/deliveries?call_id=call-{}", rows / 20)),
        ("log webhook", format!("/portal/deliveries?webhook_id={webhook}")),
        ("log 1 h, 15 d ago", format!("/portal/deliveries?since={mid}&until={mid}:59")),
        ("delivery", format!("/portal/deliveries/{delivery}")),
        ("delivery (failed)", format!("/portal/deliveries/{failed}")),
        ("recover dry run (24 h)", format!("/portal/recover?webhook_id={webhook}&since={day_ago}")),
        ("event catalog", "/portal/events".to_owned()),
    ];
    let mut timings = serde_json::Map::new();
    let mut worst: f64 = 0.0;
    for (name, path) in pages {
        let latencies = time_page(&http, &s.courier.base, &cookie, &path).await;
        let p99 = percentile(&latencies, 99.0);
        worst = worst.max(p99);
        timings.insert(name.into(), json!({"p50_ms": percentile(&latencies, 50.0), "p99_ms": p99}));
    }
    s.teardown().await;
    json!({"rows": rows, "generate_s": generate_s, "deliveries_size": size, "pages": timings,
           "worst_p99_ms": worst, "target_ms": TARGET_MS, "within_target": worst < TARGET_MS})
}

/// The hourly counts the finishing transactions would have kept for the generated history's last two days.
async fn count_hours(url: &str) {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.expect("connect");
    sqlx::query(
        "INSERT INTO delivery_hourly AS h (webhook_id, hour, succeeded, failed)
         SELECT webhook_id, date_trunc('hour', updated_at), count(*) FILTER (WHERE status = 'succeeded'),
                count(*) FILTER (WHERE status = 'failed')
           FROM deliveries WHERE created_at > now() - interval '2 days' GROUP BY 1, 2
         ON CONFLICT (webhook_id, hour) DO UPDATE SET succeeded = EXCLUDED.succeeded, failed = EXCLUDED.failed",
    )
    .execute(&mut conn)
    .await
    .expect("hourly counts");
}

/// Mints a link through the API and spends it; answers the session cookie's value.
pub async fn sign_in(http: &reqwest::Client, base: &str, key: &str) -> String {
    let res = http
        .post(format!("{base}/api/v1/portal/sessions"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(
            json!({"scopes": ["webhooks:read", "webhooks:write", "deliveries:read", "deliveries:replay"]}).to_string(),
        )
        .send()
        .await
        .expect("mint");
    assert_eq!(res.status().as_u16(), 201);
    let minted: Value = serde_json::from_str(&res.text().await.expect("body")).expect("json");
    let token = minted["url"].as_str().expect("url").split("token=").nth(1).expect("token").to_owned();
    let res = http
        .post(format!("{base}/portal/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .expect("login");
    let cookie = res.headers().get("set-cookie").expect("cookie").to_str().expect("ascii");
    cookie.split(';').next().expect("pair").to_owned()
}

/// The webhook, its newest delivery, and a failed delivery somewhere in the middle of the history.
async fn ids(url: &str) -> (String, String, String) {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.expect("connect");
    let (webhook, newest): (String, String) =
        sqlx::query_as("SELECT webhook_id, id FROM deliveries ORDER BY id DESC LIMIT 1")
            .fetch_one(&mut conn)
            .await
            .expect("newest");
    let (failed,): (String,) = sqlx::query_as(
        "SELECT id FROM deliveries WHERE status = 'failed' AND created_at < now() - interval '15 days' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&mut conn)
    .await
    .expect("a failed delivery");
    (webhook, newest, failed)
}

/// Sorted latencies (ms) of [`REQUESTS`] requests for one page, each answered 200, after one untimed request (the
/// first use of a statement plans it; every later one is what a user waits for).
async fn time_page(http: &reqwest::Client, base: &str, cookie: &str, path: &str) -> Vec<f64> {
    let mut latencies = Vec::with_capacity(REQUESTS);
    for i in 0..=REQUESTS {
        let begun = Instant::now();
        let res = http.get(format!("{base}{path}")).header("cookie", cookie).send().await.expect("page");
        let status = res.status().as_u16();
        let body = res.text().await.expect("body");
        assert_eq!(status, 200, "{path}: {body}");
        if i > 0 {
            latencies.push(begun.elapsed().as_secs_f64() * 1000.0);
        }
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

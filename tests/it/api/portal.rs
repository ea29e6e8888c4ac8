//! The tenant portal through the router: minting links, the login token's single use, the session cookie, CSRF,
//! scopes, tenant isolation, escaping of what receivers said, and the security headers. The browser tests
//! (`tests/portal/`) drive the same pages in Chromium.

use super::*;

/// A portal client: the router, and the cookie once signed in.
struct Browser<'a> {
    api: &'a Api,
    cookie: Option<String>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    html: String,
}

impl Page {
    /// The CSRF token the page's forms carry.
    fn csrf(&self) -> String {
        let at = self.html.find(r#"name="csrf" value=""#).expect("a form with a CSRF token") + 19;
        self.html[at..].split('"').next().expect("token").to_owned()
    }
}

impl<'a> Browser<'a> {
    async fn send(&self, method: Method, uri: &str, form: Option<&str>) -> Page {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(cookie) = &self.cookie {
            req = req.header("cookie", format!("courier_portal={cookie}"));
        }
        let body = match form {
            Some(form) => {
                req = req.header("content-type", "application/x-www-form-urlencoded");
                Body::from(form.to_owned())
            }
            None => Body::empty(),
        };
        let res = self.api.router.clone().oneshot(req.body(body).expect("request")).await.expect("response");
        let (parts, body) = res.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        Page { status: parts.status, headers: parts.headers, html: String::from_utf8(bytes.to_vec()).expect("utf-8") }
    }

    async fn get(&self, uri: &str) -> Page {
        self.send(Method::GET, uri, None).await
    }

    async fn post(&self, uri: &str, form: &str) -> Page {
        self.send(Method::POST, uri, Some(form)).await
    }
}

/// Mints a link with `key` and the given scopes; answers the login token.
async fn mint(api: &Api, key: &str, scopes: &[&str]) -> String {
    let (status, body) =
        api.call_as(key, Method::POST, "/api/v1/portal/sessions", Some(json!({"scopes": scopes}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let url = body["url"].as_str().expect("url");
    assert!(url.starts_with("http://courier.test/portal/login?token=pl_"), "{url}");
    url.split("token=").nth(1).expect("token").to_owned()
}

/// Signs in with a fresh link; answers the browser holding the cookie.
async fn sign_in<'a>(api: &'a Api, key: &str, scopes: &[&str]) -> Browser<'a> {
    let token = mint(api, key, scopes).await;
    let mut browser = Browser { api, cookie: None };
    let landing = browser.get(&format!("/portal/login?token={token}")).await;
    assert_eq!(landing.status, StatusCode::OK, "{}", landing.html);
    assert!(landing.headers.get("set-cookie").is_none(), "opening the link changes nothing");
    assert!(landing.html.contains(r#"<form method="post" action="/portal/login">"#), "{}", landing.html);
    let page = browser.post("/portal/login", &format!("token={token}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.html);
    let cookie = page.headers.get("set-cookie").expect("a cookie").to_str().expect("ascii").to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/portal"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(!cookie.contains("Secure"), "no Secure over a plain-http public URL: {cookie}");
    assert!(page.html.contains(r#"http-equiv="refresh" content="0; url=/portal""#), "{}", page.html);
    browser.cookie = Some(cookie["courier_portal=".len()..].split(';').next().expect("value").to_owned());
    browser
}

const ALL: [&str; 4] = ["webhooks:read", "webhooks:write", "deliveries:read", "deliveries:replay"];

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn minting_checks_scopes_and_lifetimes(pool: PgPool) {
    let api = Api::new(pool.clone()).await;
    let path = "/api/v1/portal/sessions";
    for (body, field) in [
        (json!({"scopes": []}), "scopes"),
        (json!({"scopes": ["events:write"]}), "scopes[0]"),
        (json!({"scopes": ["root"]}), "scopes[0]"),
        (json!({"scopes": ["deliveries:read"], "expires_in": 10}), "expires_in"),
        (json!({"scopes": ["deliveries:read"], "expires_in": 90000}), "expires_in"),
        (json!({"scopes": ["deliveries:read"], "expires_in": 60.5}), "expires_in"),
    ] {
        let (status, error) = api.call(Method::POST, path, Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
        assert_eq!(field_of(&error), vec![field.to_owned()], "{body}");
    }
    let tenant: (uuid::Uuid,) =
        sqlx::query_as("SELECT tenant_id FROM api_keys LIMIT 1").fetch_one(&pool).await.expect("tenant");
    let reader =
        key(&pool, courier_core::TenantId::from_uuid(tenant.0), Environment::Test, &[Scope::DeliveriesRead]).await;
    let (status, error) =
        api.call_as(&reader, Method::POST, path, Some(json!({"scopes": ["deliveries:replay"]}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a key cannot hand out a scope it lacks: {error}");
    // JSON Schema calls 60.0 an integer, and so does the API.
    let (status, error) =
        api.call(Method::POST, path, Some(json!({"scopes": ["deliveries:read"], "expires_in": 60.0}))).await;
    assert_eq!(status, StatusCode::CREATED, "{error}");
    let (status, body) =
        api.call(Method::POST, path, Some(json!({"scopes": ["deliveries:read"], "expires_in": 120}))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["scopes"], json!(["deliveries:read"]));
    let stored: (i64,) =
        sqlx::query_as("SELECT count(*) FROM portal_sessions WHERE login_hash IS NOT NULL AND session_hash IS NULL")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(stored.0, 2, "both links stored, neither yet redeemed");
    let token = body["url"].as_str().expect("url").split("token=").nth(1).expect("token").to_owned();
    let leaked: (i64,) =
        sqlx::query_as("SELECT count(*) FROM portal_sessions WHERE position($1::bytea in login_hash) > 0")
            .bind(token.as_bytes())
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(leaked.0, 0, "only a digest of the token is stored");
}

// Long because the token's whole life is one story: used, reused, forged, expired, and the session's end.
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_login_token_works_once_and_sessions_end(pool: PgPool) {
    let api = Api::new(pool.clone()).await;
    let token = mint(&api, &api.key, &ALL).await;
    let anonymous = Browser { api: &api, cookie: None };
    assert_eq!(anonymous.get("/portal").await.status, StatusCode::UNAUTHORIZED, "no cookie, no portal");
    // Opening the link (a mail scanner, a prefetch) spends nothing, however often.
    for _ in 0..3 {
        let landing = anonymous.get(&format!("/portal/login?token={token}")).await;
        assert_eq!(landing.status, StatusCode::OK);
        assert!(landing.headers.get("set-cookie").is_none());
    }
    // A page on another site posting the token (login CSRF: signing a victim into the poster's portal) is refused,
    // and the token stays unspent.
    for (header, value) in [("sec-fetch-site", "cross-site"), ("origin", "https://attacker.example")] {
        let req = Request::post("/portal/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("host", "courier.test")
            .header(header, value)
            .body(Body::from(format!("token={token}")))
            .expect("request");
        let res = api.router.clone().oneshot(req).await.expect("response");
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{header}: {value}");
        assert!(res.headers().get("set-cookie").is_none());
    }
    let first = anonymous.post("/portal/login", &format!("token={token}")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.headers.get("set-cookie").is_some());
    let again = anonymous.post("/portal/login", &format!("token={token}")).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED, "a used token is refused");
    assert!(again.html.contains("This link has expired"), "{}", again.html);
    assert!(again.headers.get("set-cookie").is_none());
    for forged in ["pl_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "nonsense", "", "pl_%00%3Cscript%3E"] {
        let page = anonymous.post("/portal/login", &format!("token={forged}")).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{forged}");
    }
    let stale = mint(&api, &api.key, &ALL).await;
    sqlx::query("UPDATE portal_sessions SET login_expires_at = now() - interval '1 second' WHERE session_hash IS NULL")
        .execute(&pool)
        .await
        .expect("age the link");
    assert_eq!(anonymous.post("/portal/login", &format!("token={stale}")).await.status, StatusCode::UNAUTHORIZED);

    let browser = sign_in(&api, &api.key, &ALL).await;
    assert_eq!(browser.get("/portal").await.status, StatusCode::OK);
    let forged_cookie = Browser { api: &api, cookie: Some("A".repeat(43)) };
    assert_eq!(forged_cookie.get("/portal").await.status, StatusCode::UNAUTHORIZED);
    sqlx::query("UPDATE portal_sessions SET expires_at = now() - interval '1 second'")
        .execute(&pool)
        .await
        .expect("expire");
    let expired = browser.get("/portal/deliveries").await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert!(expired.html.contains("This link has expired"), "{}", expired.html);

    // Signing out ends the session; so does revoking the key that minted it.
    let browser = sign_in(&api, &api.key, &ALL).await;
    let overview = browser.get("/portal").await;
    assert_eq!(browser.post("/portal/logout", "").await.status, StatusCode::FORBIDDEN, "sign-out needs the token");
    let out = browser.post("/portal/logout", &format!("csrf={}", overview.csrf())).await;
    assert_eq!(out.status, StatusCode::OK);
    assert_eq!(browser.get("/portal").await.status, StatusCode::UNAUTHORIZED);
    let browser = sign_in(&api, &api.key, &ALL).await;
    sqlx::query("UPDATE api_keys SET revoked_at = now()").execute(&pool).await.expect("revoke");
    assert_eq!(browser.get("/portal").await.status, StatusCode::UNAUTHORIZED, "a revoked key's sessions end");
}

/// One failed delivery of `webhook` whose receiver answered `body`; its id.
async fn failed_delivery(api: &Api, pool: &PgPool, webhook: &str, event: &str, body: &str) -> String {
    let (status, _) = api.event(call_completed(event)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (id,): (String,) = sqlx::query_as("SELECT id FROM deliveries WHERE event_id = $1 AND webhook_id = $2")
        .bind(event)
        .bind(webhook)
        .fetch_one(pool)
        .await
        .expect("delivery");
    sqlx::query("UPDATE deliveries SET status = 'failed', attempt_count = 1, next_attempt_at = NULL, last_status_code = 500 WHERE id = $1")
        .bind(&id)
        .execute(pool)
        .await
        .expect("fail it");
    sqlx::query("INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, response_body, signature_timestamp)
                 VALUES ($1, 1, now(), 12, 500, $2, 1705680000)")
        .bind(&id)
        .bind(body.as_bytes())
        .execute(pool)
        .await
        .expect("attempt");
    id
}

// Long because it walks one session through every page and action, with the checks each one owes.
#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn pages_escape_receivers_check_csrf_scopes_and_tenants(pool: PgPool) {
    let api = Api::new(pool.clone()).await;
    let webhook = api.webhook("https://example.com/hooks?a=1&b=2").await["id"].as_str().expect("id").to_owned();
    let hostile = r#"<script>alert(1)</script><img src=x onerror="alert(2)">"#;
    let delivery = failed_delivery(&api, &pool, &webhook, "evt_portal_1", hostile).await;
    let browser = sign_in(&api, &api.key, &ALL).await;

    let overview = browser.get("/portal").await;
    assert_eq!(overview.status, StatusCode::OK);
    let csp = overview.headers.get("content-security-policy").expect("csp").to_str().expect("ascii");
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "no script is allowed at all: {csp}");
    assert_eq!(overview.headers.get("x-content-type-options").expect("nosniff"), "nosniff");
    assert!(overview.html.contains("https://example.com/hooks?a=1&amp;b=2"), "{}", overview.html);
    assert!(overview.html.contains("<svg"), "the chart is drawn on the server");

    let page = browser.get(&format!("/portal/deliveries/{delivery}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.html.contains("<script>") && !page.html.contains("<img"), "nothing a receiver said is markup");
    assert!(page.html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{}", page.html);
    assert!(page.html.contains("&quot;call_id&quot;: &quot;call-uuid&quot;"), "the payload, pretty-printed");
    assert!(!page.html.contains("transcript"), "per the webhook's filter: no transcript");
    let log = browser.get("/portal/deliveries?status=failed").await;
    assert!(log.html.contains(&delivery), "{}", log.html);
    assert!(!browser.get("/portal/deliveries?status=succeeded").await.html.contains(&delivery));
    assert_eq!(browser.get("/portal/deliveries?status=lost").await.status, StatusCode::BAD_REQUEST);

    // CSRF: no token, a wrong token: refused, nothing replayed.
    let replay = format!("/portal/deliveries/{delivery}/replay");
    assert_eq!(browser.post(&replay, "").await.status, StatusCode::FORBIDDEN);
    assert_eq!(browser.post(&replay, "csrf=forged").await.status, StatusCode::FORBIDDEN);
    let replays = || async {
        sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM deliveries WHERE replay_of IS NOT NULL")
            .fetch_one(&pool)
            .await
            .expect("count")
            .0
    };
    assert_eq!(replays().await, 0);
    let done = browser.post(&replay, &format!("csrf={}", page.csrf())).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    let new = done
        .headers
        .get("location")
        .expect("location")
        .to_str()
        .expect("ascii")
        .rsplit('/')
        .next()
        .expect("id")
        .to_owned();
    let (status, replayed) = api.call(Method::GET, &format!("/api/v1/deliveries/{new}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replayed["replay_of"], json!(delivery));

    // A read-only session: no Replay button, and the action itself refused.
    let reader = sign_in(&api, &api.key, &["deliveries:read"]).await;
    let page = reader.get(&format!("/portal/deliveries/{delivery}")).await;
    assert!(!page.html.contains(">Replay<"), "no button without deliveries:replay");
    assert_eq!(reader.post(&replay, &format!("csrf={}", page.csrf())).await.status, StatusCode::FORBIDDEN);
    assert_eq!(replays().await, 1);

    // Another tenant's session sees none of it.
    let other = api.other_tenant_key().await;
    let stranger = sign_in(&api, &other, &ALL).await;
    assert_eq!(stranger.get(&format!("/portal/webhooks/{webhook}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(stranger.get(&format!("/portal/deliveries/{delivery}")).await.status, StatusCode::NOT_FOUND);
    let page = stranger.get("/portal").await;
    assert_eq!(stranger.post(&replay, &format!("csrf={}", page.csrf())).await.status, StatusCode::NOT_FOUND);
    assert!(!stranger.get("/portal/deliveries").await.html.contains(&delivery));
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_broker_destination_shows_its_type_and_fields_with_credentials_masked(pool: PgPool) {
    let api = Api::new(pool).await;
    let nats = json!({"destination": {"type": "nats", "url": "nats://courier:s3cret@nats.example.com:4222",
                                      "subject": "agent-studio.calls", "credentials": {"token": "t0ken"}}});
    let (status, created) = api.call(Method::POST, "/api/v1/webhooks", Some(nats)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let browser = sign_in(&api, &api.key, &ALL).await;
    let page = browser.get(&format!("/portal/webhooks/{}", created["id"].as_str().expect("id"))).await;
    assert!(page.html.contains("NATS JetStream subject") && page.html.contains("agent-studio.calls"), "{}", page.html);
    assert!(page.html.contains("nats://courier:********@nats.example.com:4222"));
    assert!(!page.html.contains("s3cret") && !page.html.contains("t0ken"), "no credential on the page");

    let kafka = json!({"destination": {"type": "kafka", "brokers": ["kafka-1.example.com:9093"], "topic": "agent-studio.calls",
                                       "tls": true, "sasl": {"mechanism": "SCRAM-SHA-512", "username": "studio-user", "password": "k4fka-pw"}}});
    let (status, created) = api.call(Method::POST, "/api/v1/webhooks", Some(kafka)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let page = browser.get(&format!("/portal/webhooks/{}", created["id"].as_str().expect("id"))).await;
    assert!(page.html.contains("Kafka topic") && page.html.contains("kafka-1.example.com:9093"), "{}", page.html);
    assert!(page.html.contains("SCRAM-SHA-512") && page.html.contains("********"), "{}", page.html);
    assert!(!page.html.contains("k4fka-pw") && !page.html.contains("studio-user"), "no credential on the page");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn test_events_disable_rotate_and_recover(pool: PgPool) {
    let api = Api::new(pool.clone()).await;
    let webhook = api.webhook("https://example.com/a").await["id"].as_str().expect("id").to_owned();
    let bystander = api.webhook("https://example.com/b").await["id"].as_str().expect("id").to_owned();
    let browser = sign_in(&api, &api.key, &ALL).await;
    let page = browser.get(&format!("/portal/webhooks/{webhook}")).await;
    let csrf = page.csrf();

    let sent = browser.post(&format!("/portal/webhooks/{webhook}/test"), &format!("csrf={csrf}")).await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER);
    let per_webhook: Vec<(String, String)> =
        sqlx::query_as("SELECT webhook_id, event_type FROM deliveries").fetch_all(&pool).await.expect("rows");
    assert_eq!(per_webhook, vec![(webhook.clone(), "call.completed".to_owned())], "to this webhook only");

    let rotated = browser.post(&format!("/portal/webhooks/{webhook}/rotate-secret"), &format!("csrf={csrf}")).await;
    assert_eq!(rotated.status, StatusCode::OK);
    assert!(rotated.html.contains("whsec_"), "the new secret, shown once");
    assert!(!browser.get(&format!("/portal/webhooks/{webhook}")).await.html.contains("whsec_"));

    let off =
        browser.post(&format!("/portal/webhooks/{webhook}/status"), &format!("csrf={csrf}&status=disabled")).await;
    assert_eq!(off.status, StatusCode::SEE_OTHER);
    let (_, got) = api.call(Method::GET, &format!("/api/v1/webhooks/{webhook}"), None).await;
    assert_eq!(got["status"], "disabled");
    let (status, _) =
        api.call(Method::GET, &format!("/api/v1/deliveries?webhook_id={webhook}&status=cancelled"), None).await;
    assert_eq!(status, StatusCode::OK);
    browser.post(&format!("/portal/webhooks/{webhook}/status"), &format!("csrf={csrf}&status=enabled")).await;
    let (_, got) = api.call(Method::GET, &format!("/api/v1/webhooks/{webhook}"), None).await;
    assert_eq!(got["status"], "enabled");

    // Recover: the dry run counts, the replay replays exactly those.
    failed_delivery(&api, &pool, &bystander, "evt_r1", "no").await;
    failed_delivery(&api, &pool, &bystander, "evt_r2", "no").await;
    let since = "2000-01-01T00:00";
    let dry = browser.get(&format!("/portal/recover?webhook_id={bystander}&since={since}")).await;
    assert!(dry.html.contains("<strong>2</strong> failed deliveries would be replayed"), "{}", dry.html);
    let started =
        browser.post("/portal/recover", &format!("csrf={}&webhook_id={bystander}&since={since}", dry.csrf())).await;
    assert_eq!(started.status, StatusCode::SEE_OTHER);
    let progress = started.headers.get("location").expect("location").to_str().expect("ascii").to_owned();
    assert!(browser.get(&progress).await.html.contains("Replay"), "the progress page");
}

//! The operator CLI against a real database: what operators type, what they see, how it fails.

use courier_store::api_keys::{self, KeyLookup};
use serde_json::Value;

use crate::support::{courier, fresh_database, stderr, stdout};

fn json_line(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "command failed: {}", stderr(out));
    serde_json::from_str(stdout(out).trim()).expect("one JSON object")
}

#[tokio::test]
async fn tenants_and_keys_lifecycle() {
    let db = fresh_database().await;
    let out = courier(&db, &["migrate"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    let tenant = json_line(&courier(&db, &["tenants", "create", "--name", "Acme Voice", "--json"], &[]));
    let tenant_id = tenant["id"].as_str().expect("id").to_owned();
    let listed = stdout(&courier(&db, &["tenants", "list"], &[]));
    assert!(listed.contains(&tenant_id) && listed.contains("Acme Voice"), "{listed}");

    let key = json_line(&courier(
        &db,
        &[
            "keys",
            "create",
            "--tenant",
            &tenant_id,
            "--env",
            "test",
            "--scopes",
            "events:write,webhooks:read",
            "--json",
        ],
        &[],
    ));
    let plaintext = key["key"].as_str().expect("key").to_owned();
    let key_id = key["id"].as_str().expect("id").to_owned();
    assert!(plaintext.starts_with("as_test_"), "{plaintext}");

    let pool = sqlx::PgPool::connect(&db).await.expect("pool");
    assert!(matches!(api_keys::authenticate(&pool, &plaintext).await.expect("lookup"), KeyLookup::Valid(_)));

    let listed = stdout(&courier(&db, &["keys", "list", "--tenant", &tenant_id], &[]));
    assert!(listed.contains(&key_id) && !listed.contains(&plaintext), "keys list never shows the key: {listed}");

    let out = courier(&db, &["keys", "revoke", &key_id], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(api_keys::authenticate(&pool, &plaintext).await.expect("lookup"), KeyLookup::Revoked);

    let again = courier(&db, &["keys", "revoke", &key_id], &[]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("no active key"), "{}", stderr(&again));
}

#[tokio::test]
async fn bad_input_fails_with_one_clear_line() {
    let db = fresh_database().await;
    assert!(courier(&db, &["migrate"], &[]).status.success());
    let cases: [(&[&str], &str); 4] = [
        (&["keys", "create", "--tenant", "nope", "--env", "test", "--scopes", "events:write"], "not a tenant id"),
        (
            &[
                "keys",
                "create",
                "--tenant",
                "0193a0c4-0000-7000-8000-000000000000",
                "--env",
                "test",
                "--scopes",
                "bogus",
            ],
            "unknown scope `bogus`",
        ),
        (
            &[
                "keys",
                "create",
                "--tenant",
                "0193a0c4-0000-7000-8000-000000000000",
                "--env",
                "test",
                "--scopes",
                "events:write",
            ],
            "no tenant",
        ),
        (&["keys", "revoke", "wh_01ARZ3NDEKTSV4RRFFQ69G5FAV"], "key_"),
    ];
    for (args, expected) in cases {
        let out = courier(&db, args, &[]);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = stderr(&out);
        assert!(err.starts_with("courier: ") && err.contains(expected), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line, got {err}");
    }
}

#[tokio::test]
async fn bad_configuration_names_the_variable() {
    let db = fresh_database().await;
    let out = courier(&db, &["migrate"], &[("COURIER_RETRY_INITIAL", "soon")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("COURIER_RETRY_INITIAL"), "{}", stderr(&out));
    let out = courier("", &["migrate"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("DATABASE_URL"), "{}", stderr(&out));
}

// Long because it is one operator session: each command reads the state the one before left.
#[tokio::test]
async fn operators_list_show_replay_and_toggle_webhooks() {
    use courier_core::MasterKey;
    use courier_core::{Environment, EventData, EventId, EventSelector, EventType, PayloadFilter};
    use courier_scheduler::{ingest, wake::Notifier};
    use courier_store::events::NewEvent;
    use courier_store::webhooks::{self, NewWebhook};
    use courier_store::{Owner, tenants};

    let db = fresh_database().await;
    assert!(courier(&db, &["migrate"], &[]).status.success());
    let pool = sqlx::PgPool::connect(&db).await.expect("pool");
    let tenant = tenants::create(&pool, "Acme").await.expect("tenant");
    let owner = Owner { tenant: tenant.id, environment: Environment::Live };
    let new = NewWebhook {
        url: "https://receiver.example/hook".to_owned(),
        broker: None,
        description: None,
        events: EventSelector::All,
        payload: PayloadFilter::default(),
        max_attempts: 5,
        ordering: Default::default(),
        headers: Default::default(),
        rate_limit: None,
    };
    let (webhook, _) = webhooks::create(&pool, &MasterKey::from_bytes(&[1; 32]), owner, new).await.expect("webhook");
    let events = (0..2)
        .map(|i| NewEvent {
            id: EventId::parse(&format!("evt_op{i}")).expect("id"),
            event_type: EventType::CallFailed,
            created: None,
            // A tenant may put anything in a call id, terminal escapes included.
            data: EventData::parse(serde_json::json!({"call_id": format!("call-{i}\u{1b}]0;owned\u{7}")}))
                .expect("data"),
        })
        .collect();
    let answers = ingest::accept(&pool, &Notifier::spawn(pool.clone()), owner, events, None).await.expect("ingest");
    assert!(answers.iter().all(|a| a.as_ref().is_ok_and(|a| a.deliveries == 1)), "{answers:?}");
    // One delivery has failed for good, with an attempt on record.
    let failed: String = sqlx::query_scalar(
        "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, attempt_count = 1, last_status_code = 500
         WHERE event_id = 'evt_op0' RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .expect("fail one");
    sqlx::query(
        "INSERT INTO delivery_attempts VALUES ($1, 1, now(), 12, 500, NULL, NULL, E'upstream exploded\\x1b[2J', 1700000000)",
    )
    .bind(&failed)
    .execute(&pool)
    .await
    .expect("attempt");

    let tenant_id = tenant.id.to_string();
    let out = courier(&db, &["deliveries", "list", "--status", "failed", "--since", "1h", "--json"], &[]);
    let lines: Vec<serde_json::Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), 1, "{}", stderr(&out));
    assert_eq!(lines[0]["id"], failed.as_str());
    let table = stdout(&courier(&db, &["deliveries", "list", "--tenant", &tenant_id], &[]));
    assert_eq!(table.lines().count(), 3, "a header and two rows: {table}");

    let shown = stdout(&courier(&db, &["deliveries", "show", &failed], &[]));
    assert!(
        shown.contains("https://receiver.example/hook")
            && shown.contains("HTTP 500")
            && shown.contains("upstream exploded"),
        "{shown}"
    );
    assert!(!shown.contains('\u{1b}') && !shown.contains('\u{7}'), "escapes are shown, not obeyed: {shown:?}");
    assert!(shown.contains("call-0\\u{1b}]0;owned\\u{7}"), "{shown:?}");

    let dry = stdout(&courier(&db, &["replay", "--tenant", &tenant_id, "--dry-run"], &[]));
    assert!(dry.contains("would replay 1"), "{dry}");
    let done = stdout(&courier(&db, &["replay", "--tenant", &tenant_id], &[]));
    assert!(done.contains("replayed 1"), "{done}");
    let again = stdout(&courier(&db, &["replay", "--tenant", &tenant_id], &[]));
    assert!(again.contains("replayed 0"), "a rerun does not queue a second replay: {again}");
    assert!(!courier(&db, &["replay", "--status", "failed"], &[]).status.success(), "--tenant is required");

    let listed = stdout(&courier(&db, &["webhooks", "list", "--tenant", &tenant_id], &[]));
    assert!(listed.contains(webhook.id.as_str()) && listed.contains("enabled"), "{listed}");
    let disabled = stdout(&courier(&db, &["webhooks", "disable", webhook.id.as_str()], &[]));
    assert!(disabled.contains("cancelled 2"), "the pending delivery and the replay: {disabled}");
    let listed = stdout(&courier(&db, &["webhooks", "list", "--tenant", &tenant_id], &[]));
    assert!(listed.contains("disabled (manual)"), "{listed}");
    assert!(courier(&db, &["webhooks", "enable", webhook.id.as_str()], &[]).status.success());
    let bad = courier(&db, &["webhooks", "enable", "dlv_nope"], &[]);
    assert!(!bad.status.success() && stderr(&bad).contains("not a webhook id"), "{}", stderr(&bad));
}

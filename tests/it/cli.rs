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

//! courier-store against a real PostgreSQL: a fresh, migrated database per test.

use chrono::Utc;
use courier_core::{
    Environment, EventData, EventId, EventSelector, EventType, MasterKey, PayloadFilter, Scope, Scopes, SealedSecrets,
};
use courier_store::api_keys::{self, KeyLookup};
use courier_store::events::{self, Inserted, NewEvent};
use courier_store::webhooks::{self, NewWebhook, WebhookPatch, WebhookStatus};
use courier_store::{Owner, tenants};
use sqlx::PgPool;

fn master_key() -> MasterKey {
    MasterKey::from_bytes(&[7u8; 32])
}

async fn owner(pool: &PgPool, environment: Environment) -> Owner {
    let tenant = tenants::create(pool, "Acme").await.expect("tenant");
    Owner { tenant: tenant.id, environment }
}

fn new_webhook(url: &str) -> NewWebhook {
    NewWebhook {
        url: url.to_owned(),
        broker: None,
        description: Some("billing".to_owned()),
        events: EventSelector::parse(["call.completed", "call.failed"]).expect("valid"),
        payload: PayloadFilter { include_transcript: true, include_metrics: false },
        max_attempts: 5,
        ordering: Default::default(),
        headers: Default::default(),
        rate_limit: None,
    }
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn keys_are_stored_hashed_and_found_by_their_text(pool: PgPool) {
    let owner = owner(&pool, Environment::Live).await;
    let scopes = Scopes::new([Scope::EventsWrite, Scope::WebhooksRead]);
    let created = api_keys::create(&pool, owner.tenant, Environment::Live, &scopes).await.expect("created");
    assert!(created.plaintext.starts_with("as_live_"));
    assert_eq!(created.key.display_prefix, &created.plaintext[..12]);

    let stored: Vec<u8> = sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE id = $1")
        .bind(created.key.id.as_str())
        .fetch_one(&pool)
        .await
        .expect("row");
    assert_eq!(stored.len(), 32);
    assert!(!String::from_utf8_lossy(&stored).contains(&created.plaintext[8..]));

    match api_keys::authenticate(&pool, &created.plaintext).await.expect("lookup") {
        KeyLookup::Valid(key) => {
            assert_eq!(key.owner, owner);
            assert_eq!(key.scopes, scopes);
        }
        other => panic!("expected a valid key, got {other:?}"),
    }
    let mut wrong = created.plaintext.clone();
    wrong.pop();
    wrong.push('Z');
    assert_eq!(api_keys::authenticate(&pool, &wrong).await.expect("lookup"), KeyLookup::Unknown);
    assert_eq!(api_keys::authenticate(&pool, "not-a-key").await.expect("lookup"), KeyLookup::Unknown);
    // The same random body under the other environment's prefix is a different key.
    let swapped = created.plaintext.replacen("as_live_", "as_test_", 1);
    assert_eq!(api_keys::authenticate(&pool, &swapped).await.expect("lookup"), KeyLookup::Unknown);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn revoked_keys_stop_working(pool: PgPool) {
    let owner = owner(&pool, Environment::Test).await;
    let created = api_keys::create(&pool, owner.tenant, Environment::Test, &Scopes::new([Scope::EventsWrite]))
        .await
        .expect("key");
    assert!(api_keys::revoke(&pool, &created.key.id).await.expect("revoke"));
    assert!(!api_keys::revoke(&pool, &created.key.id).await.expect("second revoke is a no-op"));
    assert_eq!(api_keys::authenticate(&pool, &created.plaintext).await.expect("lookup"), KeyLookup::Revoked);
    let listed = api_keys::list(&pool, owner.tenant).await.expect("list");
    assert!(listed[0].revoked_at.is_some());
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn last_used_is_recorded_in_one_batch(pool: PgPool) {
    let owner = owner(&pool, Environment::Test).await;
    let a = api_keys::create(&pool, owner.tenant, Environment::Test, &Scopes::new([Scope::EventsWrite]))
        .await
        .expect("key");
    let b = api_keys::create(&pool, owner.tenant, Environment::Test, &Scopes::new([Scope::EventsWrite]))
        .await
        .expect("key");
    let at = Utc::now();
    api_keys::mark_used(&pool, &[a.key.id.clone(), b.key.id.clone()], at).await.expect("marked");
    let listed = api_keys::list(&pool, owner.tenant).await.expect("list");
    assert!(listed.iter().all(|k| k.last_used_at.is_some()));
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn webhook_secrets_are_encrypted_at_rest_and_round_trip(pool: PgPool) {
    let owner = owner(&pool, Environment::Live).await;
    let key = master_key();
    let (webhook, secret) =
        webhooks::create(&pool, &key, owner, new_webhook("https://example.com/hook")).await.expect("created");
    assert_eq!(webhook.status, WebhookStatus::Enabled);
    assert!(webhook.payload.include_transcript);
    assert!(webhook.events.matches(EventType::CallFailed));
    assert!(!webhook.events.matches(EventType::CallStarted));

    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret_ciphertext FROM webhooks WHERE id = $1")
        .bind(webhook.id.as_str())
        .fetch_one(&pool)
        .await
        .expect("row");
    let needle = secret.expose().as_bytes();
    assert!(!stored.windows(needle.len()).any(|w| w == needle), "the secret must not be stored in clear");
    assert!(!stored.windows(secret.key_bytes().len()).any(|w| w == secret.key_bytes()));

    let sealed = SealedSecrets { webhook: webhook.id.clone(), current: stored, previous: None };
    assert_eq!(sealed.open(&key, Utc::now()).expect("decrypts"), vec![secret]);
    assert!(sealed.open(&MasterKey::from_bytes(&[8u8; 32]), Utc::now()).is_err());
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn rotation_keeps_the_old_secret_for_the_grace_period(pool: PgPool) {
    let owner = owner(&pool, Environment::Live).await;
    let key = master_key();
    let (webhook, old) =
        webhooks::create(&pool, &key, owner, new_webhook("https://example.com/hook")).await.expect("created");
    let (rotated, new) = webhooks::rotate_secret(&pool, &key, owner, &webhook.id, chrono::Duration::hours(24))
        .await
        .expect("rotate")
        .expect("exists");
    assert_ne!(old, new);
    let expires = rotated.previous_secret_expires_at.expect("grace set");
    let (current, previous): (Vec<u8>, Vec<u8>) =
        sqlx::query_as("SELECT secret_ciphertext, previous_secret_ciphertext FROM webhooks WHERE id = $1")
            .bind(webhook.id.as_str())
            .fetch_one(&pool)
            .await
            .expect("row");
    let sealed = SealedSecrets { webhook: webhook.id.clone(), current, previous: Some((previous, expires)) };
    assert_eq!(sealed.open(&key, Utc::now()).expect("ok"), vec![old, new.clone()], "old first, newest last");
    let after = expires + chrono::Duration::seconds(1);
    assert_eq!(sealed.open(&key, after).expect("ok"), vec![new]);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn tenants_and_environments_are_isolated(pool: PgPool) {
    let key = master_key();
    let acme = owner(&pool, Environment::Live).await;
    let globex = owner(&pool, Environment::Live).await;
    let acme_test = Owner { environment: Environment::Test, ..acme };
    let (webhook, _) =
        webhooks::create(&pool, &key, acme, new_webhook("https://acme.example/hook")).await.expect("created");

    assert!(webhooks::get(&pool, acme, &webhook.id).await.expect("get").is_some());
    assert!(webhooks::get(&pool, globex, &webhook.id).await.expect("get").is_none());
    assert!(webhooks::get(&pool, acme_test, &webhook.id).await.expect("get").is_none());
    assert!(webhooks::list(&pool, globex, None, 100).await.expect("list").is_empty());
    assert!(
        webhooks::update(
            &mut pool.acquire().await.expect("conn"),
            &key,
            globex,
            &webhook.id,
            WebhookPatch { max_attempts: Some(3), ..Default::default() }
        )
        .await
        .expect("update")
        .is_none()
    );
    assert!(!webhooks::delete(&pool, globex, &webhook.id).await.expect("delete"));
    assert!(
        webhooks::rotate_secret(&pool, &key, globex, &webhook.id, chrono::Duration::hours(1))
            .await
            .expect("rotate")
            .is_none()
    );

    let event = NewEvent {
        id: EventId::parse("evt_shared").expect("valid"),
        event_type: EventType::CallStarted,
        created: Some(1),
        data: EventData::parse(serde_json::json!({"call_id": "c"})).expect("valid"),
    };
    let mut conn = pool.acquire().await.expect("conn");
    assert!(matches!(insert_one(&mut conn, acme, &event).await.expect("insert"), Inserted::New(_)));
    // Another tenant may use the same event id: ids are per tenant.
    assert!(matches!(insert_one(&mut conn, globex, &event).await.expect("insert"), Inserted::New(_)));
    assert!(events::get(&pool, acme_test, &event.id).await.expect("get").is_none());
    // Test mode has its own id space: the same id there is a new event, neither a conflict nor a repeat.
    let mut different = event.clone();
    different.event_type = EventType::CallFailed;
    assert!(matches!(insert_one(&mut conn, acme_test, &different).await.expect("insert"), Inserted::New(_)));
    let batch = events::insert_many(&mut conn, acme_test, std::slice::from_ref(&event)).await.expect("batch");
    assert!(matches!(batch[0], Inserted::Conflict), "within test mode the id is taken by the call.failed one");
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn webhooks_update_disable_and_delete(pool: PgPool) {
    let owner = owner(&pool, Environment::Test).await;
    let key = master_key();
    let (webhook, _) =
        webhooks::create(&pool, &key, owner, new_webhook("https://example.com/a")).await.expect("created");
    let patch = WebhookPatch {
        url: Some("https://example.com/b".to_owned()),
        description: Some(None),
        events: Some(EventSelector::All),
        include_metrics: Some(true),
        ..Default::default()
    };
    let mut conn = pool.acquire().await.expect("conn");
    webhooks::update(&mut conn, &key, owner, &webhook.id, patch).await.expect("update").expect("exists");
    let one = std::slice::from_ref(&webhook.id);
    webhooks::state::disable(&mut conn, one, webhooks::DisabledReason::Manual).await.expect("disable");
    let updated = webhooks::get(&mut *conn, owner, &webhook.id).await.expect("get").expect("exists");
    assert_eq!(updated.url, "https://example.com/b");
    assert_eq!(updated.description, None);
    assert_eq!(updated.events, EventSelector::All);
    assert!(updated.payload.include_metrics && updated.payload.include_transcript);
    assert_eq!(updated.status, WebhookStatus::Disabled(webhooks::DisabledReason::Manual));
    assert_eq!(webhooks::state::enable(&mut conn, one).await.expect("enable"), one);
    let enabled = webhooks::get(&mut *conn, owner, &webhook.id).await.expect("get").expect("exists");
    assert_eq!(enabled.status, WebhookStatus::Enabled);
    drop(conn);

    assert!(webhooks::delete(&pool, owner, &webhook.id).await.expect("delete"));
    assert!(webhooks::get(&pool, owner, &webhook.id).await.expect("get").is_none());
    assert!(webhooks::list(&pool, owner, None, 10).await.expect("list").is_empty());
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn webhook_lists_page_newest_first(pool: PgPool) {
    let owner = owner(&pool, Environment::Test).await;
    let key = master_key();
    let mut ids = Vec::new();
    for i in 0..5 {
        let (w, _) = webhooks::create(&pool, &key, owner, new_webhook(&format!("https://example.com/{i}")))
            .await
            .expect("created");
        ids.push(w.id);
    }
    let first = webhooks::list(&pool, owner, None, 2).await.expect("page 1");
    let second = webhooks::list(&pool, owner, Some(&first[1].id), 2).await.expect("page 2");
    let third = webhooks::list(&pool, owner, Some(&second[1].id), 2).await.expect("page 3");
    let seen: Vec<_> = first.iter().chain(&second).chain(&third).map(|w| w.id.clone()).collect();
    ids.reverse();
    assert_eq!(seen, ids);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn event_ingest_is_idempotent_on_tenant_and_id(pool: PgPool) {
    let owner = owner(&pool, Environment::Live).await;
    let event = NewEvent {
        id: EventId::parse("evt_abc123").expect("valid"),
        event_type: EventType::CallCompleted,
        created: None,
        data: EventData::parse(serde_json::json!({"call_id": "c-1", "duration_seconds": 180})).expect("valid"),
    };
    let mut conn = pool.acquire().await.expect("conn");
    let Inserted::New(first) = insert_one(&mut conn, owner, &event).await.expect("insert") else {
        panic!("first insert is new");
    };
    assert!(first.event.livemode);
    assert!(first.event.created > 1_700_000_000, "created defaults to the time of ingest");
    match insert_one(&mut conn, owner, &event).await.expect("repeat") {
        Inserted::Repeat(again) => assert_eq!(again, first),
        other => panic!("expected a repeat, got {other:?}"),
    }
    let different =
        NewEvent { data: EventData::parse(serde_json::json!({"call_id": "c-2"})).expect("valid"), ..event.clone() };
    assert_eq!(insert_one(&mut conn, owner, &different).await.expect("conflict"), Inserted::Conflict);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&pool).await.expect("count");
    assert_eq!(count, 1);
}

#[sqlx::test(migrator = "courier_store::MIGRATOR")]
async fn a_created_keys_debug_output_hides_the_key(pool: PgPool) {
    let owner = owner(&pool, Environment::Test).await;
    let created = api_keys::create(&pool, owner.tenant, Environment::Test, &Scopes::new([Scope::EventsWrite]))
        .await
        .expect("created");
    let text = format!("{created:?}");
    assert!(!text.contains(&created.plaintext), "{text}");
    assert!(text.contains("[redacted]"), "{text}");
}

/// One event through the batch insert (the only insert there is), as a single answer.
async fn insert_one(conn: &mut sqlx::PgConnection, owner: Owner, event: &NewEvent) -> courier_store::Result<Inserted> {
    Ok(events::insert_many(conn, owner, std::slice::from_ref(event)).await?.remove(0))
}

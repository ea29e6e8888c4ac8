//! Ties our signatures to the customer's contract: the integration guide's own Python `verify_signature`
//! must accept what courier-core signs and refuse tampered, mis-keyed and stale requests.

use std::io::Write;
use std::process::{Command, Stdio};

use courier_core::signature::sign_header;
use courier_core::{
    DeliveryId, Envelope, Event, EventData, EventId, EventType, PayloadFilter, TenantId, WebhookSecret,
};

fn guide_accepts(secret: &str, header: &str, body: &[u8]) -> bool {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/guide_verify_signature.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(secret)
        .arg(header)
        .stdin(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().expect("stdin").write_all(body).expect("body written");
    let status = child.wait().expect("python3 exits");
    match status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!("verifier crashed: {other:?}"),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs() as i64
}

fn body() -> Vec<u8> {
    let event = Event {
        id: EventId::generate(),
        event_type: EventType::CallCompleted,
        created: now(),
        tenant_id: TenantId::generate(),
        livemode: true,
        data: EventData::parse(serde_json::json!({
            "call_id": "call-uuid",
            "transcript": [{"role": "user", "content": "Grüß dich — ünïcödé, \"quotes\" and = signs"}],
            "metrics": {"duration_seconds": 180}
        }))
        .expect("valid"),
    };
    let delivery = DeliveryId::generate();
    Envelope {
        event: &event,
        filter: PayloadFilter { include_transcript: true, include_metrics: true },
        delivery_id: &delivery,
        attempt: 1,
        max_attempts: 5,
    }
    .to_bytes()
}

#[test]
fn guide_verifier_accepts_what_we_sign() {
    let secret = WebhookSecret::generate();
    let body = body();
    let header = sign_header(&[&secret], now(), &body);
    assert!(guide_accepts(secret.expose(), &header, &body));
}

#[test]
fn guide_verifier_rejects_tampered_body_wrong_secret_and_stale_timestamp() {
    let secret = WebhookSecret::generate();
    let body = body();
    let header = sign_header(&[&secret], now(), &body);

    let mut tampered = body.clone();
    let last = tampered.len() - 2;
    tampered[last] = b' ';
    assert!(!guide_accepts(secret.expose(), &header, &tampered));

    let other = WebhookSecret::generate();
    assert!(!guide_accepts(other.expose(), &header, &body));

    let stale = sign_header(&[&secret], now() - 600, &body);
    assert!(!guide_accepts(secret.expose(), &stale, &body));
}

#[test]
fn guide_verifier_accepts_the_newest_secret_during_rotation() {
    // The guide's verifier keeps only the last `v1`, so the newest secret is signed last.
    let old = WebhookSecret::generate();
    let new = WebhookSecret::generate();
    let body = body();
    let header = sign_header(&[&old, &new], now(), &body);
    assert!(guide_accepts(new.expose(), &header, &body));
}

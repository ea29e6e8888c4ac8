//! `/portal/events`: the six call lifecycle event types with an example payload each, and how to verify a
//! delivery's signature.

use axum::response::Response;
use courier_core::{DeliveryId, Envelope, Event, EventData, EventId, EventType, PayloadFilter, TenantId, samples};
use maud::{Markup, html};

use super::page::{PortalError, Section, layout, render};
use super::session::Viewer;

/// The integration guide's own verifier: what every delivery is checked against in our tests.
const VERIFY_PYTHON: &str = r#"import hashlib, hmac, time

def verify_signature(payload: bytes, signature_header: str) -> bool:
    try:
        parts = dict(p.split("=") for p in signature_header.split(","))
        timestamp = int(parts["t"])
        signature = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > 300:  # 5 minute tolerance
        return False
    signed_payload = f"{timestamp}.{payload.decode()}"
    expected = hmac.new(WEBHOOK_SECRET.encode(), signed_payload.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature, expected)"#;

/// The envelope a webhook taking transcripts and metrics receives for an example `t`, built by the same code that
/// builds real ones.
fn example(t: EventType) -> String {
    let data = EventData::parse_as(t, serde_json::Value::Object(samples::data(t, "call-uuid")))
        .unwrap_or_else(|_| EventData::operational(samples::data(t, "call-uuid")));
    let event = Event {
        id: EventId::generate(),
        event_type: t,
        created: 1_705_680_000,
        tenant_id: TenantId::from_uuid(uuid::Uuid::nil()),
        livemode: true,
        data,
    };
    let filter = PayloadFilter { include_transcript: true, include_metrics: true };
    let envelope =
        Envelope { event: &event, filter, delivery_id: &DeliveryId::generate(), attempt: 1, max_attempts: 5 };
    super::pretty::indent(&String::from_utf8_lossy(&envelope.to_bytes()))
}

fn event_section(t: EventType) -> Markup {
    let (when, use_case) = samples::describe(t);
    html! {
        section aria-labelledby=(format!("ev-{}", t.as_str())) {
            h2 id=(format!("ev-{}", t.as_str())) { code { (t.as_str()) } }
            p { (when) ". " span.muted { "Used for: " (use_case) "." } }
            details {
                summary { "Example payload" }
                pre.payload { (example(t)) }
            }
        }
    }
}

pub async fn show(viewer: Viewer) -> Result<Response, PortalError> {
    Ok(render(layout(
        "Event catalog",
        Some(viewer.nav(Section::Events)),
        html! {
            h1 { "Event catalog" }
            p {
                "Each delivery is a POST whose body is the envelope below. " code { "transcript" } " and "
                code { "metrics" } " appear only when the webhook includes them."
            }
            @for t in EventType::CALLS { (event_section(t)) }
            section aria-labelledby="verify" {
                h2 id="verify" { "Verifying signatures" }
                p {
                    "Every request carries " code { "X-Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>" }
                    " over " code { "<t>.<raw body>" } " with your webhook's secret (the whole " code { "whsec_…" }
                    " string). Verify the raw bytes before parsing them:"
                }
                pre.code { (VERIFY_PYTHON) }
                p {
                    "Requests also carry the Standard Webhooks headers (" code { "webhook-id" } ", " code { "webhook-timestamp" }
                    ", " code { "webhook-signature" } "), so the Standard Webhooks libraries verify them too, e.g. "
                    code { "from standardwebhooks import Webhook; Webhook(secret).verify(body, headers)" } "."
                }
            }
        },
    )))
}

//! The OpenAPI 3.1 document, generated from the handlers' annotations and the DTO types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{deliveries, events, health, portal_sessions, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(title = "Courier", description = "Durable outbound webhook delivery: webhooks, event ingest, delivery logs, replay."),
    paths(
        webhooks::create, webhooks::list, webhooks::get, webhooks::update, webhooks::delete, webhooks::rotate_secret,
        events::ingest, events::ingest_batch, events::list, events::get,
        deliveries::list, deliveries::get, deliveries::replay_one, deliveries::replay_bulk, deliveries::get_replay,
        portal_sessions::create, health::healthz, health::readyz,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "webhooks", description = "A tenant's endpoints"),
        (name = "events", description = "Call lifecycle events from the emitter"),
        (name = "deliveries", description = "The delivery log and replay"),
        (name = "portal", description = "Magic links into the tenant portal"),
        (name = "operations", description = "Health"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`as_live_…` or `as_test_…`"))
                    .build(),
            ),
        );
    }
}

/// The document as served. utoipa cannot state `propertyNames`, so the rules for custom header names and values
/// (`courier_core::headers`) are written into the webhook bodies' `headers` here: a request the schema allows is
/// one the API accepts.
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    for body in ["CreateWebhook", "UpdateWebhook"] {
        if let Some(headers) = doc.pointer_mut(&format!("/components/schemas/{body}/properties/headers"))
            && let Some(headers) = headers.as_object_mut()
        {
            use courier_core::headers::{MAX_HEADERS, MAX_VALUE, NAME_PATTERN, VALUE_PATTERN, reserved_pattern};
            headers.insert("maxProperties".into(), MAX_HEADERS.into());
            headers.insert(
                "propertyNames".into(),
                serde_json::json!({ "pattern": NAME_PATTERN, "not": { "pattern": reserved_pattern() } }),
            );
            headers.insert(
                "additionalProperties".into(),
                serde_json::json!({ "type": "string", "maxLength": MAX_VALUE, "pattern": VALUE_PATTERN }),
            );
        }
    }
    doc
}

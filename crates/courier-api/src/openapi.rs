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

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

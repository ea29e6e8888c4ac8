//! `/portal/webhooks/{id}`: one webhook's settings and recent deliveries; enable or disable it, rotate its
//! secret, send it a test event.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use courier_core::{Scope, WebhookId};
use courier_scheduler::logs::{self, DeliveryFilter};
use courier_scheduler::test_event::{self, TestSent};
use courier_scheduler::webhook_changes::{self, SetStatus};
use courier_store::webhooks::{self, Webhook, WebhookStatus};
use maud::{Markup, html};
use serde::Deserialize;

use super::log::delivery_rows;
use super::overview::status_text;
use super::page::{PortalError, Section, layout, render};
use super::session::{CarriesCsrf, CsrfForm, Submitted, Viewer};
use crate::state::AppState;

/// Recent deliveries shown on the page.
const RECENT: u32 = 20;

fn parse_id(text: &str) -> Result<WebhookId, PortalError> {
    WebhookId::parse(text).map_err(|_| PortalError::NotFound("webhook"))
}

async fn load(state: &AppState, viewer: &Viewer, id: &WebhookId) -> Result<Webhook, PortalError> {
    let owner = viewer.require(Scope::WebhooksRead)?;
    webhooks::get(&state.pool, owner, id).await?.ok_or(PortalError::NotFound("webhook"))
}

/// Where the webhook delivers: its type, then each field of a broker destination as stored (credentials masked).
fn destination(webhook: &Webhook) -> Markup {
    let Some(fields) = webhook.destination.as_ref().and_then(serde_json::Value::as_object) else {
        return html! { dt { "Destination" } dd { "HTTP POST to " code { (webhook.url) } } };
    };
    let kind = fields.get("type").and_then(serde_json::Value::as_str).unwrap_or("broker");
    let shown = |value: &serde_json::Value| match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    html! {
        dt { "Destination" }
        dd { (match kind { "redis" => "Redis stream", "nats" => "NATS JetStream subject", "rabbitmq" => "RabbitMQ exchange",
                           "kafka" => "Kafka topic", "relay" => "relay to courier listen", other => other }) }
        @for (name, value) in fields.iter().filter(|(name, _)| name.as_str() != "type") {
            dt { (name.replace('_', " ")) } dd { code { (shown(value)) } }
        }
    }
}

fn settings(webhook: &Webhook) -> Markup {
    html! {
        dl.facts {
            (destination(webhook))
            dt { "Status" } dd { (status_text(webhook.status)) }
            dt { "Events" } dd { (webhook.events.names().join(", ")) }
            dt { "Transcript / metrics" }
            dd {
                (if webhook.payload.include_transcript { "transcript included" } else { "no transcript" }) ", "
                (if webhook.payload.include_metrics { "metrics included" } else { "no metrics" })
            }
            dt { "Attempts" } dd { "up to " (webhook.max_attempts) }
            dt { "Ordering" } dd { (webhook.ordering.as_str()) }
            dt { "Rate limit" }
            dd { @match webhook.rate_limit { Some(n) => { (n) " per second" }, None => "none" } }
            @if !webhook.header_names.is_empty() {
                dt { "Custom headers" } dd { (webhook.header_names.join(", ")) }
            }
        }
    }
}

fn actions(viewer: &Viewer, webhook: &Webhook) -> Markup {
    let base = format!("/portal/webhooks/{}", webhook.id);
    let enabled = webhook.status == WebhookStatus::Enabled;
    html! {
        section aria-labelledby="actions" {
            h2 id="actions" { "Actions" }
            div.actions {
                form method="post" action=(format!("{base}/test")) {
                    (viewer.csrf_field())
                    button type="submit" disabled[!enabled] { "Send test event" }
                }
                form method="post" action=(format!("{base}/status")) {
                    (viewer.csrf_field())
                    input type="hidden" name="status" value=(if enabled { "disabled" } else { "enabled" });
                    button type="submit" { (if enabled { "Disable" } else { "Enable" }) }
                }
                form method="post" action=(format!("{base}/rotate-secret")) {
                    (viewer.csrf_field())
                    button type="submit" { "Rotate secret" }
                }
            }
        }
    }
}

/// The webhook page; `notice` is what an action just did (a new secret is shown here once).
async fn page(
    state: &AppState,
    viewer: &Viewer,
    webhook: &Webhook,
    notice: Option<Markup>,
) -> Result<Response, PortalError> {
    let recent = if viewer.can(Scope::DeliveriesRead) {
        let filter = DeliveryFilter { webhook_id: Some(webhook.id.clone()), ..DeliveryFilter::default() };
        Some(logs::list(state.reader(), viewer.owner(), &filter, None, RECENT).await?)
    } else {
        None
    };
    Ok(render(layout(
        "Webhook",
        Some(viewer.nav(Section::Overview)),
        html! {
            p.crumbs { a href="/portal" { "Webhooks" } " / " (webhook.id) }
            h1 { (webhook.url) }
            @if let Some(notice) = notice { div.notice role="status" { (notice) } }
            @if let Some(description) = &webhook.description { p.muted { (description) } }
            (settings(webhook))
            @if viewer.can(Scope::WebhooksWrite) { (actions(viewer, webhook)) }
            @if let Some(recent) = recent {
                section aria-labelledby="recent" {
                    h2 id="recent" { "Recent deliveries" }
                    (delivery_rows(&recent))
                    p { a href=(format!("/portal/deliveries?webhook_id={}", webhook.id)) { "All deliveries of this webhook" } }
                }
            }
        },
    )))
}

pub async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PortalError> {
    let webhook = load(&state, &viewer, &parse_id(&id)?).await?;
    page(&state, &viewer, &webhook, None).await
}

#[derive(Debug, Deserialize)]
pub struct StatusForm {
    csrf: Option<String>,
    status: String,
}

impl CarriesCsrf for StatusForm {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// Enables or disables, as `PATCH {"status": …}` does: disabling cancels the queue and announces it.
pub async fn set_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Submitted { viewer, form }: Submitted<StatusForm>,
) -> Result<Response, PortalError> {
    let owner = viewer.require(Scope::WebhooksWrite)?;
    let id = parse_id(&id)?;
    let status = match form.status.as_str() {
        "enabled" => SetStatus::Enabled,
        "disabled" => SetStatus::Disabled,
        _ => return Err(PortalError::BadInput("status must be enabled or disabled".into())),
    };
    webhook_changes::set_status(&state.pool, owner, &id, status).await?;
    Ok(Redirect::to(&format!("/portal/webhooks/{id}")).into_response())
}

/// A new secret, shown on this answer only; the old one keeps signing for the grace period.
pub async fn rotate_secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Submitted { viewer, .. }: Submitted<CsrfForm>,
) -> Result<Response, PortalError> {
    let owner = viewer.require(Scope::WebhooksWrite)?;
    let id = parse_id(&id)?;
    let grace = chrono::Duration::from_std(state.config.webhooks.rotation_grace).unwrap_or(chrono::Duration::hours(24));
    let (webhook, secret) = webhook_changes::rotate_secret(&state.pool, &state.key, owner, &id, grace).await?;
    let notice = html! {
        p { "New signing secret (shown only now; copy it into your receiver):" }
        p { code.secret { (secret.expose()) } }
        p { "The previous secret keeps signing beside it until the grace period ends." }
    };
    page(&state, &viewer, &webhook, Some(notice)).await
}

/// A sample event delivered to this webhook only, then its delivery page.
pub async fn send_test(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Submitted { viewer, .. }: Submitted<CsrfForm>,
) -> Result<Response, PortalError> {
    let owner = viewer.require(Scope::WebhooksWrite)?;
    let webhook = load(&state, &viewer, &parse_id(&id)?).await?;
    let Some(event_type) = test_event::type_for(|t| webhook.events.matches(t)) else {
        return Err(PortalError::BadInput("this webhook's filter takes no call event type".into()));
    };
    match test_event::send(&state.pool, owner, &webhook.id, event_type).await? {
        TestSent::Queued { delivery, .. } => {
            Ok(Redirect::to(&format!("/portal/deliveries/{delivery}")).into_response())
        }
        TestSent::NotDeliverable => Err(PortalError::BadInput("this webhook is disabled: enable it first".into())),
    }
}

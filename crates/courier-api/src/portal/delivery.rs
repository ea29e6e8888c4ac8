//! `/portal/deliveries/{id}`: one delivery, the envelope it carries and every attempt; Replay.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use courier_core::{DeliveryId, Envelope, ResponseBody, Scope};
use courier_scheduler::logs::{self, Attempt, Delivery};
use courier_scheduler::replay::{self, Replayed};
use courier_store::{events, webhooks};
use maud::{Markup, html};

use super::page::{PortalError, Section, layout, render, status_badge, time};
use super::session::{CsrfForm, Submitted, Viewer};
use crate::state::AppState;

/// How much of a response body the page shows; the API has the whole stored body.
const BODY_SHOWN: usize = 4096;

fn parse_id(text: &str) -> Result<DeliveryId, PortalError> {
    DeliveryId::parse(text).map_err(|_| PortalError::NotFound("delivery"))
}

fn body(body: &ResponseBody) -> Markup {
    let text = body.display();
    let cut = text.len() > BODY_SHOWN;
    let end = if cut { (0..=BODY_SHOWN).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0) } else { text.len() };
    let shown = &text[..end];
    html! {
        @if body.is_binary() { p.muted { "Binary body (" (body.as_bytes().len()) " bytes), shown with escapes:" } }
        pre.body { (shown) }
        @if cut || body.truncated() { p.muted { "Truncated." } }
    }
}

fn attempt_row(a: &Attempt) -> Markup {
    html! {
        tr {
            td { (a.attempt) }
            td { (time(a.started_at)) }
            td { (a.duration_ms) " ms" }
            td {
                @if let Some(code) = a.status_code { "HTTP " (code) }
                @if let Some(kind) = a.error_kind { span.badge.failed { (kind.as_str()) } }
                @if let Some(message) = &a.error_message { " " (message) }
            }
            td { code { (a.signature_timestamp) } }
            td {
                @match &a.response_body {
                    Some(b) if !b.is_empty() => (body(b)),
                    _ => span.muted { "empty" },
                }
            }
        }
    }
}

/// The envelope as the receiver got it on the last attempt (the first, when none was made): rebuilt from the
/// stored event and the payload filter recorded with the delivery, exactly as the worker builds it (a delivery
/// older than that record used its webhook's filter, as the worker still does for it).
async fn envelope(state: &AppState, viewer: &Viewer, d: &Delivery) -> Result<Option<String>, PortalError> {
    let owner = viewer.owner();
    let mut stored = events::get(state.reader(), owner, &d.event_id).await?;
    if let (None, Some(primary)) = (&stored, state.primary_on_miss()) {
        stored = events::get(primary, owner, &d.event_id).await?;
    }
    let Some(stored) = stored else { return Ok(None) };
    let filter = match d.payload {
        Some(recorded) => recorded,
        // One webhook is read on the primary, as everywhere: it may be newer than any replica knows.
        None => webhooks::get(&state.pool, owner, &d.webhook_id).await?.map(|w| w.payload).unwrap_or_default(),
    };
    let attempt = d.attempt_count.max(1);
    let bytes =
        Envelope { event: &stored.event, filter, delivery_id: &d.id, attempt, max_attempts: d.max_attempts }.to_bytes();
    Ok(Some(super::pretty::indent(&String::from_utf8_lossy(&bytes))))
}

fn facts(d: &Delivery) -> Markup {
    html! {
        dl.facts {
            dt { "Status" } dd { (status_badge(d.status)) }
            dt { "Event" } dd { (d.event_type.as_str()) " " code { (d.event_id) } }
            dt { "Call" } dd { code { (d.call_id) } }
            dt { "Webhook" } dd { a href=(format!("/portal/webhooks/{}", d.webhook_id)) { code { (d.webhook_id) } } }
            dt { "Attempts" } dd { (d.attempt_count) " of " (d.max_attempts) }
            @if let Some(next) = d.next_attempt_at { dt { "Next attempt" } dd { (time(next)) } }
            @if let Some(of) = &d.replay_of {
                dt { "Replay of" } dd { a href=(format!("/portal/deliveries/{of}")) { code { (of) } } }
            }
            dt { "Created" } dd { (time(d.created_at)) }
        }
    }
}

pub async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PortalError> {
    let owner = viewer.require(Scope::DeliveriesRead)?;
    let id = parse_id(&id)?;
    let mut found = logs::get(state.reader(), owner, &id).await?;
    if let (None, Some(primary)) = (&found, state.primary_on_miss()) {
        found = logs::get(primary, owner, &id).await?;
    }
    let (d, attempts) = found.ok_or(PortalError::NotFound("delivery"))?;
    let envelope = envelope(&state, &viewer, &d).await?;
    Ok(render(layout(
        "Delivery",
        Some(viewer.nav(Section::Deliveries)),
        html! {
            p.crumbs { a href="/portal/deliveries" { "Delivery log" } " / " (d.id) }
            h1 { "Delivery " code { (d.id) } }
            (facts(&d))
            @if viewer.can(Scope::DeliveriesReplay) {
                form method="post" action=(format!("/portal/deliveries/{}/replay", d.id)) {
                    (viewer.csrf_field())
                    button type="submit" { "Replay" }
                }
            }
            section aria-labelledby="attempts" {
                h2 id="attempts" { "Attempts" }
                @if attempts.is_empty() { p.muted { "No attempt yet." } } @else {
                    table {
                        thead { tr {
                            th scope="col" { "#" } th scope="col" { "Started" } th scope="col" { "Duration" }
                            th scope="col" { "Outcome" } th scope="col" { "Signature timestamp" } th scope="col" { "Response body" }
                        } }
                        tbody { @for a in &attempts { (attempt_row(a)) } }
                    }
                }
            }
            section aria-labelledby="payload" {
                h2 id="payload" { "Payload" }
                @match envelope {
                    Some(json) => pre.payload { (json) },
                    None => p.muted { "The event is no longer stored (past retention)." },
                }
            }
        },
    )))
}

/// Queues a new delivery of the same event to the same webhook, then shows it.
pub async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Submitted { viewer, .. }: Submitted<CsrfForm>,
) -> Result<Response, PortalError> {
    let owner = viewer.require(Scope::DeliveriesReplay)?;
    let id = parse_id(&id)?;
    match replay::replay_one(&state.pool, owner, &id, None).await? {
        Replayed::Queued(new) => Ok(Redirect::to(&format!("/portal/deliveries/{}", new.id)).into_response()),
        Replayed::NotFound => Err(PortalError::NotFound("delivery")),
        Replayed::WebhookInactive => {
            Err(PortalError::BadInput("the webhook is disabled or deleted; enable it to replay".into()))
        }
    }
}

//! `/portal`: every webhook of the tenant with its status, success rate and last 24 hours.

use axum::extract::State;
use axum::response::Response;
use courier_core::Scope;
use courier_scheduler::activity::{self, Activity};
use courier_store::webhooks::{self, DisabledReason, Webhook, WebhookStatus};
use maud::{Markup, html};

use super::chart;
use super::page::{PortalError, Section, layout, render, time};
use super::session::Viewer;
use crate::state::AppState;

/// The most webhooks the overview lists (a tenant's limit is 100 by default).
const SHOWN: u32 = 200;

pub fn reason_text(reason: DisabledReason) -> &'static str {
    match reason {
        DisabledReason::Manual => "turned off by hand",
        DisabledReason::Gone => "the receiver answered 410 Gone",
        DisabledReason::Failing => "every delivery failed for days",
    }
}

pub fn status_text(status: WebhookStatus) -> Markup {
    match status {
        WebhookStatus::Enabled => html! { span.badge.succeeded { "enabled" } },
        WebhookStatus::Disabled(reason) => html! {
            span.badge.failed { "disabled" } " " small { "(" (reason_text(reason)) ")" }
        },
    }
}

fn card(webhook: &Webhook, activity: &Activity) -> Markup {
    html! {
        article.card aria-labelledby=(format!("t-{}", webhook.id)) {
            h2 id=(format!("t-{}", webhook.id)) {
                a href=(format!("/portal/webhooks/{}", webhook.id)) { (webhook.url) }
            }
            @if let Some(description) = &webhook.description {
                p.muted { (description) }
            }
            dl.facts {
                dt { "Status" } dd { (status_text(webhook.status)) }
                dt { "Success rate (24 h)" }
                dd { @match activity.success_rate() {
                    Some(rate) => (format!("{:.1} %", rate * 100.0)),
                    None => "no finished deliveries",
                } }
                dt { "Last delivery" }
                dd { @match activity.last_delivery { Some(at) => (time(at)), None => "never" } }
            }
            (chart::hourly(activity, &webhook.url))
        }
    }
}

pub async fn show(State(state): State<AppState>, viewer: Viewer) -> Result<Response, PortalError> {
    let title = "Webhooks";
    if !viewer.can(Scope::WebhooksRead) {
        return Ok(render(layout(
            title,
            Some(viewer.nav(Section::Overview)),
            html! {
                h1 { (title) }
                p { "This session cannot list webhooks. " a href="/portal/deliveries" { "Open the delivery log" } "." }
            },
        )));
    }
    let owner = viewer.owner();
    let hooks = webhooks::list(state.reader(), owner, None, SHOWN).await?;
    let ids: Vec<_> = hooks.iter().map(|w| w.id.clone()).collect();
    let activity = activity::recent(state.reader(), owner, &ids).await?;
    let empty = Activity::default();
    Ok(render(layout(
        title,
        Some(viewer.nav(Section::Overview)),
        html! {
            h1 { (title) }
            @if hooks.is_empty() {
                p { "No webhooks yet. Create one through the API (" code { "POST /api/v1/webhooks" } ")." }
            }
            @for webhook in &hooks {
                (card(webhook, activity.get(&webhook.id).unwrap_or(&empty)))
            }
        },
    )))
}

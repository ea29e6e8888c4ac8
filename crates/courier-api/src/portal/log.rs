//! `/portal/deliveries`: the delivery log, newest first, filtered by status, event type, webhook, call and time,
//! a page at a time.

use axum::extract::{Query, State};
use axum::response::Response;
use chrono::{DateTime, NaiveDateTime, Utc};
use courier_core::{DeliveryId, EventType, Scope, WebhookId};
use courier_scheduler::DeliveryStatus;
use courier_scheduler::logs::{self, Delivery, DeliveryFilter};
use courier_store::webhooks;
use maud::{Markup, html};
use serde::Deserialize;

use super::page::{PortalError, Section, layout, render, status_badge, time};
use super::session::Viewer;
use crate::state::AppState;

const PAGE: u32 = 50;

/// The table of deliveries the log and the webhook page show.
pub fn delivery_rows(rows: &[Delivery]) -> Markup {
    html! {
        @if rows.is_empty() {
            p.muted { "No deliveries." }
        } @else {
            table {
                thead { tr {
                    th scope="col" { "Delivery" } th scope="col" { "Event" } th scope="col" { "Call" }
                    th scope="col" { "Status" } th scope="col" { "Attempts" } th scope="col" { "Last response" }
                    th scope="col" { "Created" }
                } }
                tbody {
                    @for d in rows {
                        tr {
                            td { a href=(format!("/portal/deliveries/{}", d.id)) { code { (d.id) } } }
                            td { (d.event_type.as_str()) }
                            td { code { (d.call_id) } }
                            td { (status_badge(d.status)) }
                            td { (d.attempt_count) " / " (d.max_attempts) }
                            td {
                                @if let Some(code) = d.last_status_code { "HTTP " (code) }
                                @else if let Some(error) = &d.last_error { (error) }
                            }
                            td { (time(d.created_at)) }
                        }
                    }
                }
            }
        }
    }
}

/// The filters as the form sends them; empty fields mean "any".
#[derive(Debug, Default, Deserialize)]
pub struct LogParams {
    status: Option<String>,
    event_type: Option<String>,
    webhook_id: Option<String>,
    call_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<String>,
}

fn given(field: &Option<String>) -> Option<&str> {
    field.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A `datetime-local` value (`2026-01-19T12:00`) read as UTC, or a full RFC 3339 time.
pub fn parse_time(field: &str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, PortalError> {
    let Some(text) = text else { return Ok(None) };
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| Some(t.and_utc()))
        .ok_or_else(|| PortalError::BadInput(format!("{field}: not a time; use the date picker or 2026-01-19T12:00")))
}

impl LogParams {
    fn filter(&self) -> Result<DeliveryFilter, PortalError> {
        let bad = |what: &str| PortalError::BadInput(format!("unknown {what}"));
        let call_id = given(&self.call_id).map(str::to_owned);
        if call_id.as_ref().is_some_and(|c| c.len() > courier_core::EventData::MAX_CALL_ID || c.contains('\0')) {
            return Err(PortalError::BadInput("call_id: at most 256 bytes, no NUL".into()));
        }
        Ok(DeliveryFilter {
            status: given(&self.status).map(|s| s.parse::<DeliveryStatus>()).transpose().map_err(|_| bad("status"))?,
            event_types: given(&self.event_type)
                .map(|t| t.parse::<EventType>())
                .transpose()
                .map_err(|_| bad("event type"))?
                .into_iter()
                .collect(),
            webhook_id: given(&self.webhook_id).map(WebhookId::parse).transpose().map_err(|_| bad("webhook"))?,
            call_id,
            since: parse_time("since", given(&self.since))?,
            until: parse_time("until", given(&self.until))?,
        })
    }

    /// This query with `before` moved on, for the next page's link.
    fn next(&self, before: &DeliveryId) -> String {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("status", &self.status),
            ("event_type", &self.event_type),
            ("webhook_id", &self.webhook_id),
            ("call_id", &self.call_id),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if let Some(value) = given(value) {
                pairs.append_pair(name, value);
            }
        }
        pairs.append_pair("before", before.as_str());
        format!("/portal/deliveries?{}", pairs.finish())
    }
}

fn select(name: &str, label: &str, chosen: Option<&str>, options: &[(String, String)]) -> Markup {
    html! {
        div.field {
            label for=(name) { (label) }
            select id=(name) name=(name) {
                option value="" { "Any" }
                @for (value, text) in options {
                    option value=(value) selected[chosen == Some(value.as_str())] { (text) }
                }
            }
        }
    }
}

fn filter_form(params: &LogParams, webhooks: &[(String, String)]) -> Markup {
    let statuses: Vec<(String, String)> = [
        DeliveryStatus::Failed,
        DeliveryStatus::Succeeded,
        DeliveryStatus::Pending,
        DeliveryStatus::Delivering,
        DeliveryStatus::Waiting,
        DeliveryStatus::Cancelled,
    ]
    .iter()
    .map(|s| (s.as_str().to_owned(), s.as_str().to_owned()))
    .collect();
    let types: Vec<(String, String)> =
        EventType::ALL.iter().map(|t| (t.as_str().to_owned(), t.as_str().to_owned())).collect();
    html! {
        form.filters method="get" action="/portal/deliveries" role="search" aria-label="Filter deliveries" {
            (select("status", "Status", given(&params.status), &statuses))
            (select("event_type", "Event type", given(&params.event_type), &types))
            (select("webhook_id", "Webhook", given(&params.webhook_id), webhooks))
            div.field {
                label for="call_id" { "Call ID" }
                input #call_id type="text" name="call_id" value=[given(&params.call_id)] maxlength="256";
            }
            div.field {
                label for="since" { "From (UTC)" }
                input #since type="datetime-local" name="since" value=[given(&params.since)];
            }
            div.field {
                label for="until" { "Until (UTC)" }
                input #until type="datetime-local" name="until" value=[given(&params.until)];
            }
            button type="submit" { "Filter" }
            a href="/portal/deliveries" { "Clear" }
        }
    }
}

pub async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(params): Query<LogParams>,
) -> Result<Response, PortalError> {
    let owner = viewer.require(Scope::DeliveriesRead)?;
    let filter = params.filter()?;
    let before = given(&params.before)
        .map(DeliveryId::parse)
        .transpose()
        .map_err(|_| PortalError::BadInput("not a page of this log".into()))?;
    let _turn = state.reads.begin(owner.tenant).map_err(PortalError::Busy)?;
    let page = logs::page(&state.pool, owner, &filter, before.as_ref(), PAGE + 1).await?;
    let mut rows = page.rows;
    let more = rows.len() > PAGE as usize;
    rows.truncate(PAGE as usize);
    let next = if more { rows.last().map(|d| d.id.clone()) } else { page.resume_before };
    let hooks = if viewer.can(Scope::WebhooksRead) {
        webhooks::list(&state.pool, owner, None, 200).await?.into_iter().map(|w| (w.id.to_string(), w.url)).collect()
    } else {
        Vec::new()
    };
    Ok(render(layout(
        "Delivery log",
        Some(viewer.nav(Section::Deliveries)),
        html! {
            h1 { "Delivery log" }
            (filter_form(&params, &hooks))
            (delivery_rows(&rows))
            @if let Some(next) = next {
                nav aria-label="Pages" { a rel="next" href=(params.next(&next)) { "Older deliveries →" } }
            }
        },
    )))
}

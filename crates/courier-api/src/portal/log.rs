//! `/portal/deliveries`: the delivery log, newest first, filtered by status, event type, webhook, call and time,
//! a page at a time.

use axum::extract::{Query, State};
use axum::response::Response;
use courier_core::{DeliveryId, EventType, Scope};
use courier_scheduler::DeliveryStatus;
use courier_scheduler::logs::{self, Delivery, DeliveryFilter};
use courier_store::webhooks;
use maud::{Markup, html};
use serde::Deserialize;

use super::page::{PortalError, Section, layout, render, status_badge, time};
use super::session::Viewer;
use crate::filter::{Face, FilterText, Invalid};
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

/// A form field's value, when filled in.
fn given(field: &Option<String>) -> Option<&str> {
    crate::filter::given(Face::Portal, field.as_deref())
}

impl From<Invalid> for PortalError {
    fn from(err: Invalid) -> Self {
        PortalError::BadInput(format!("{}: {}", err.field, err.message))
    }
}

impl LogParams {
    fn filter(&self) -> Result<DeliveryFilter, PortalError> {
        let event_type = self.event_type.as_deref().map(|t| ("event_type".to_owned(), t));
        Ok(FilterText {
            status: self.status.as_deref(),
            webhook_id: self.webhook_id.as_deref(),
            event_types: event_type.into_iter().collect(),
            call_id: self.call_id.as_deref(),
            since: self.since.as_deref(),
            until: self.until.as_deref(),
            from: Face::Portal,
        }
        .parse()?)
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
    let page = logs::page(state.reader(), owner, &filter, before.as_ref(), PAGE + 1).await?;
    let mut rows = page.rows;
    let more = rows.len() > PAGE as usize;
    rows.truncate(PAGE as usize);
    let next = if more { rows.last().map(|d| d.id.clone()) } else { page.resume_before };
    let hooks = if viewer.can(Scope::WebhooksRead) {
        webhooks::list(state.reader(), owner, None, 200).await?.into_iter().map(|w| (w.id.to_string(), w.url)).collect()
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

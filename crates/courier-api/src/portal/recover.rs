//! `/portal/recover`: replay every failed delivery since a time (of one webhook or all), after showing how many
//! that is; then the replay's progress.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use courier_core::{ReplayId, Scope};
use courier_scheduler::DeliveryStatus;
use courier_scheduler::logs::DeliveryFilter;
use courier_scheduler::replay;
use courier_store::webhooks;
use maud::{Markup, html};
use serde::Deserialize;

use super::page::{PortalError, Section, layout, refreshing, render, time};
use super::session::{CarriesCsrf, Submitted, Viewer};
use crate::filter::{Face, FilterText};
use crate::state::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct RecoverParams {
    csrf: Option<String>,
    webhook_id: Option<String>,
    since: Option<String>,
}

impl CarriesCsrf for RecoverParams {
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

impl RecoverParams {
    fn filter(&self) -> Result<Option<DeliveryFilter>, PortalError> {
        let text = FilterText {
            webhook_id: self.webhook_id.as_deref(),
            since: self.since.as_deref(),
            from: Face::Portal,
            ..FilterText::default()
        };
        let mut filter = text.parse()?;
        if filter.since.is_none() {
            return Ok(None);
        }
        filter.status = Some(DeliveryStatus::Failed);
        Ok(Some(filter))
    }
}

fn form(params: &RecoverParams, hooks: &[(String, String)]) -> Markup {
    let chosen = params.webhook_id.as_deref().unwrap_or("");
    html! {
        form.filters method="get" action="/portal/recover" {
            div.field {
                label for="webhook_id" { "Webhook" }
                select #webhook_id name="webhook_id" {
                    option value="" { "All webhooks" }
                    @for (id, url) in hooks { option value=(id) selected[chosen == id] { (url) } }
                }
            }
            div.field {
                label for="since" { "Failed since (UTC)" }
                input #since type="datetime-local" name="since" required value=[params.since.as_deref()];
            }
            button type="submit" { "Count failed deliveries" }
        }
    }
}

/// The form, and once it has a time, the dry run: how many deliveries a replay would queue.
pub async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(params): Query<RecoverParams>,
) -> Result<Response, PortalError> {
    let owner = viewer.require(Scope::DeliveriesReplay)?;
    let hooks: Vec<(String, String)> = if viewer.can(Scope::WebhooksRead) {
        webhooks::list(state.reader(), owner, None, 200).await?.into_iter().map(|w| (w.id.to_string(), w.url)).collect()
    } else {
        Vec::new()
    };
    let count = match params.filter()? {
        Some(filter) => {
            let _turn = state.reads.begin(owner.tenant).map_err(PortalError::Busy)?;
            Some(replay::count_bulk(state.reader(), owner, &filter).await?)
        }
        None => None,
    };
    Ok(render(layout(
        "Recover",
        Some(viewer.nav(Section::Recover)),
        html! {
            h1 { "Recover failed deliveries" }
            p { "Replays every delivery that failed, of events received since a time: each gets a new delivery with fresh attempts." }
            (form(&params, &hooks))
            @if let Some(count) = count {
                section aria-labelledby="dry-run" {
                    h2 id="dry-run" { "Dry run" }
                    p role="status" { strong { (count) } " failed " (if count == 1 { "delivery" } else { "deliveries" }) " would be replayed." }
                    @if count > 0 {
                        form method="post" action="/portal/recover" {
                            (viewer.csrf_field())
                            input type="hidden" name="webhook_id" value=(params.webhook_id.as_deref().unwrap_or(""));
                            input type="hidden" name="since" value=(params.since.as_deref().unwrap_or(""));
                            button type="submit" { "Replay " (count) " deliveries" }
                        }
                    }
                }
            }
        },
    )))
}

/// Starts the replay job and goes to its progress.
pub async fn start(
    State(state): State<AppState>,
    Submitted { viewer, form: params }: Submitted<RecoverParams>,
) -> Result<Response, PortalError> {
    let owner = viewer.require(Scope::DeliveriesReplay)?;
    let filter = params.filter()?.ok_or_else(|| PortalError::BadInput("since: choose a time".into()))?;
    match replay::start_bulk(&state.pool, owner, &filter, None, state.config.max_running_replays).await? {
        replay::Started::Queued(job) => Ok(Redirect::to(&format!("/portal/replays/{}", job.id)).into_response()),
        replay::Started::AtLimit(limit) => Err(PortalError::BadInput(format!(
            "{limit} replays are already queued or running, the most at once; start this one when one has ended"
        ))),
    }
}

/// A replay job's progress; the page reloads itself every two seconds until it has finished or failed.
pub async fn progress(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PortalError> {
    let owner = viewer.require(Scope::DeliveriesReplay)?;
    let id = ReplayId::parse(&id).map_err(|_| PortalError::NotFound("replay"))?;
    let job = replay::job(&state.pool, owner, &id).await?.ok_or(PortalError::NotFound("replay"))?;
    let here = format!("/portal/replays/{}", job.id);
    let main = html! {
        p.crumbs { a href="/portal/recover" { "Recover" } " / " (job.id) }
        h1 { "Replay " code { (job.id) } }
        dl.facts {
            dt { "Status" } dd role="status" { span class=(format!("badge {}", job.status.as_str())) { (job.status.as_str()) } }
            dt { "Replayed so far" } dd { (job.replayed) }
            dt { "Deliveries examined" } dd { (job.scanned) }
            @if let Some(error) = &job.error { dt { "Error" } dd { (error) } }
            dt { "Started" } dd { (time(job.created_at)) }
            @if let Some(done) = job.finished_at { dt { "Ended" } dd { (time(done)) } }
        }
        p { a href="/portal/deliveries" { "Open the delivery log" } }
    };
    let section = Some(viewer.nav(Section::Recover));
    let page = if job.status.ended() {
        layout("Replay", section, main)
    } else {
        refreshing("Replay", section, 2, &here, main)
    };
    Ok(render(page))
}

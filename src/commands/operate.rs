//! Operator commands on deliveries and webhooks: direct database access, across tenants.

use std::io::IsTerminal;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use courier_core::{DeliveryId, EventType, TenantId, WebhookId};
use courier_scheduler::DeliveryStatus;
use courier_scheduler::logs::{self, DeliveryFilter};
use courier_scheduler::operator as queue;
use courier_scheduler::webhook_changes::{self, SetStatus};
use courier_store::operator;
use courier_store::webhooks::DisabledReason;
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;

use super::terminal::shown;
use crate::cli::{DeliveriesCommand, ReplayArgs, SelectArgs, WebhooksCommand};

/// `2h`, `30m`, `7d` ago, or an RFC 3339 time.
pub fn parse_time(flag: &str, text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let ago = humantime::parse_duration(text)
        .with_context(|| format!("{flag} `{text}`: expected a duration like 2h or an RFC 3339 time"))?;
    Ok(Utc::now() - chrono::Duration::from_std(ago).context("duration too long")?)
}

/// The tenant (every one when not given) and the filter an operator selected.
fn filter(select: &SelectArgs) -> anyhow::Result<(Option<TenantId>, DeliveryFilter)> {
    let tenant = select
        .tenant
        .as_deref()
        .map(|t| t.parse::<TenantId>().map_err(|_| anyhow::anyhow!("--tenant `{t}` is not a tenant id (a UUID)")))
        .transpose()?;
    let filter = DeliveryFilter {
        status: select.status.as_deref().map(str::parse::<DeliveryStatus>).transpose().context("--status")?,
        webhook_id: select.webhook.as_deref().map(WebhookId::parse).transpose().context("--webhook")?,
        event_types: select
            .event_type
            .iter()
            .map(|t| t.parse::<EventType>())
            .collect::<Result<_, _>>()
            .context("--event-type")?,
        call_id: None,
        since: select.since.as_deref().map(|s| parse_time("--since", s)).transpose()?,
        until: select.until.as_deref().map(|s| parse_time("--until", s)).transpose()?,
    };
    Ok((tenant, filter))
}

pub async fn deliveries(pool: &PgPool, cmd: DeliveriesCommand) -> anyhow::Result<()> {
    match cmd {
        DeliveriesCommand::List { select, limit, json } => list_deliveries(pool, &select, limit, json).await,
        DeliveriesCommand::Show { id } => show_delivery(pool, &id).await,
    }
}

async fn list_deliveries(pool: &PgPool, select: &SelectArgs, limit: u32, json: bool) -> anyhow::Result<()> {
    let (tenant, filter) = filter(select)?;
    if !(1..=10_000).contains(&limit) {
        bail!("--limit must be between 1 and 10000");
    }
    let rows = queue::deliveries(pool, tenant, &filter, limit).await?;
    if !json {
        println!(
            "{:<30} {:<10} {:<8} {:<18} {:<30} {:<25} LAST",
            "DELIVERY", "STATUS", "ATTEMPTS", "EVENT", "WEBHOOK", "CREATED"
        );
    }
    for d in rows {
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "id": d.id, "tenant_id": d.tenant_id, "event_id": d.event_id, "event_type": d.event_type.as_str(),
                    "call_id": d.call_id, "webhook_id": d.webhook_id, "status": d.status.as_str(),
                    "attempt_count": d.attempt_count, "max_attempts": d.max_attempts,
                    "next_attempt_at": d.next_attempt_at, "last_status_code": d.last_status_code,
                    "last_error": d.last_error, "replay_of": d.replay_of, "created_at": d.created_at,
                })
            );
        } else {
            let last = d.last_status_code.map(|c| c.to_string()).or(d.last_error.clone()).unwrap_or_default();
            let last = shown(&last);
            println!(
                "{:<30} {:<10} {:<8} {:<18} {:<30} {:<25} {}",
                d.id,
                d.status.as_str(),
                format!("{}/{}", d.attempt_count, d.max_attempts),
                d.event_type.as_str(),
                d.webhook_id,
                d.created_at.format("%Y-%m-%d %H:%M:%S"),
                last
            );
        }
    }
    Ok(())
}

async fn show_delivery(pool: &PgPool, id: &str) -> anyhow::Result<()> {
    let id = DeliveryId::parse(id).map_err(|e| anyhow::anyhow!("`{id}`: {e}"))?;
    let (d, attempts) = queue::delivery(pool, &id).await?.with_context(|| format!("no delivery {id}"))?;
    let url = operator::webhook_url(pool, &d.webhook_id).await?;
    println!("delivery     {}", d.id);
    println!("tenant       {}", d.tenant_id);
    println!("event        {} ({}, call {})", d.event_id, d.event_type.as_str(), shown(&d.call_id));
    println!("webhook      {} {}", d.webhook_id, shown(&url.unwrap_or_default()));
    println!("status       {} after {}/{} attempts", d.status.as_str(), d.attempt_count, d.max_attempts);
    if let Some(next) = d.next_attempt_at {
        println!("next attempt {next}");
    }
    if let Some(of) = &d.replay_of {
        println!("replay of    {of}");
    }
    for a in attempts {
        print_attempt(a);
    }
    Ok(())
}

fn print_attempt(a: logs::Attempt) {
    let outcome =
        a.status_code.map(|c| format!("HTTP {c}")).or(a.error_kind.map(|k| k.to_string())).unwrap_or_default();
    println!("  #{} {} {:>6} ms  {}", a.attempt, a.started_at.format("%Y-%m-%d %H:%M:%S%.3f"), a.duration_ms, outcome);
    if let Some(message) = a.error_message {
        println!("     {}", shown(&message));
    }
    if let Some(body) = a.response_body {
        // What a receiver said is shown on one line, without control characters that could drive the terminal.
        let one_line: String = body.display().chars().take(200).map(|c| if c.is_control() { ' ' } else { c }).collect();
        let one_line = shown(&one_line);
        let binary = if body.is_binary() { " (binary)" } else { "" };
        println!("     {one_line}{binary}");
    }
}

pub async fn replay(pool: &PgPool, args: ReplayArgs) -> anyhow::Result<()> {
    if args.select.tenant.is_none() {
        bail!("--tenant is required: bulk replay acts on one tenant at a time");
    }
    let (tenant, mut filter) = filter(&args.select)?;
    filter.status.get_or_insert(DeliveryStatus::Failed);
    // On a terminal, a progress bar against the dry-run count; elsewhere (a job log, a pipe) only the final line.
    let bar = if std::io::stderr().is_terminal() && !args.dry_run {
        let expected = queue::replay_bulk(pool, tenant, &filter, true, None, |_| {}).await?;
        let style = ProgressStyle::with_template("{bar:40} {pos}/{len} deliveries replayed ({per_sec}, {eta} left)")?;
        Some(ProgressBar::new(expected).with_style(style))
    } else {
        None
    };
    let total = queue::replay_bulk(pool, tenant, &filter, args.dry_run, None, |done| {
        if let Some(bar) = &bar {
            // Deliveries that failed since the count make the run longer than expected.
            bar.set_length(bar.length().unwrap_or(0).max(done));
            bar.set_position(done);
        }
    })
    .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if args.dry_run {
        println!("would replay {total} deliveries");
    } else {
        println!("replayed {total} deliveries");
    }
    Ok(())
}

pub async fn webhooks(pool: &PgPool, cmd: WebhooksCommand) -> anyhow::Result<()> {
    match cmd {
        WebhooksCommand::List { tenant, json } => {
            let tenant: TenantId =
                tenant.parse().map_err(|_| anyhow::anyhow!("--tenant `{tenant}` is not a tenant id (a UUID)"))?;
            for w in operator::list_webhooks(pool, tenant).await? {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"id": w.id.as_str(), "environment": w.environment.as_str(), "url": w.url,
                                           "status": w.status.as_str(),
                                           "disabled_reason": w.status.disabled_reason().map(DisabledReason::as_str)})
                    );
                } else {
                    let reason = w.status.disabled_reason().map(|r| format!(" ({r})")).unwrap_or_default();
                    println!(
                        "{}  {}  {}{}  {}",
                        w.id,
                        w.environment.as_str(),
                        w.status.as_str(),
                        reason,
                        shown(&w.url)
                    );
                }
            }
        }
        WebhooksCommand::Enable { id } | WebhooksCommand::Disable { id } if WebhookId::parse(&id).is_err() => {
            bail!("`{id}` is not a webhook id (wh_…)");
        }
        WebhooksCommand::Enable { id } => {
            set_status(pool, &id, SetStatus::Enabled).await?;
            println!("enabled {id}");
        }
        WebhooksCommand::Disable { id } => {
            let cancelled = set_status(pool, &id, SetStatus::Disabled).await?;
            println!("disabled {id}; cancelled {cancelled} pending deliveries");
        }
    }
    Ok(())
}

/// An operator turns a webhook on or off as its owner would, through the same use case.
/// Returns how many queued deliveries that cancelled.
async fn set_status(pool: &PgPool, id: &str, status: SetStatus) -> anyhow::Result<u64> {
    let id = WebhookId::parse(id)?;
    let owner = operator::webhook_owner(pool, &id).await?.with_context(|| format!("no webhook {id}"))?;
    Ok(webhook_changes::set_status(pool, owner, &id, status).await?.cancelled)
}

pub async fn purge(pool: &PgPool, tenant: &str, before: Option<&str>) -> anyhow::Result<()> {
    let tenant: TenantId =
        tenant.parse().map_err(|_| anyhow::anyhow!("--tenant `{tenant}` is not a tenant id (a UUID)"))?;
    let before = before.map(|b| parse_time("--before", b)).transpose()?;
    courier_store::tenants::get(pool, tenant).await?.with_context(|| format!("no tenant {tenant}"))?;
    let erased = courier_scheduler::retention::purge_tenant(pool, tenant, before).await?;
    println!(
        "erased {} events and {} deliveries of tenant {tenant}, with their attempts",
        erased.events, erased.deliveries
    );
    Ok(())
}

/// `courier ingest rejects`: the Kafka records ingest set aside, newest first.
pub async fn ingest_rejects(pool: &PgPool, limit: u32, json: bool) -> anyhow::Result<()> {
    let rejects = courier_store::ingest_rejects::list(pool, i64::from(limit)).await?;
    for r in rejects {
        let first = String::from_utf8_lossy(&r.first_bytes);
        if json {
            let line = serde_json::json!({
                "topic": r.topic, "partition": r.partition, "offset": r.offset, "reason": r.reason,
                "message": r.message, "tenant_id": r.tenant_id, "first_bytes": first, "rejected_at": r.rejected_at,
            });
            println!("{line}");
        } else {
            let first: String = first.chars().map(|c| if c.is_control() { '.' } else { c }).take(80).collect();
            println!(
                "{}  {}/{}@{}  {:<19}  {}  {first}",
                r.rejected_at.format("%Y-%m-%d %H:%M:%S"),
                r.topic,
                r.partition,
                r.offset,
                r.reason,
                r.message
            );
        }
    }
    Ok(())
}

//! Operational events: Courier's own events in a tenant's stream, so operators and tenants learn that deliveries
//! are in trouble without polling. `webhook.disabled` when a webhook stops receiving (reason `gone`, `failing` or
//! `manual`), `delivery.exhausted` when a delivery failed after its last allowed attempt.
//!
//! They are stored and fanned out in the transaction that made them true, like any accepted event, so they are
//! signed, retried and recorded like any other delivery. A webhook receives them only when its filter names them
//! (`*` does not), never when they are about itself, and an exhausted delivery of an operational event announces
//! nothing (two failing operational webhooks would otherwise feed each other forever).

use courier_core::{EventData, EventId, EventType, TenantId, WebhookId};
use courier_store::Owner;
use courier_store::events::NewEvent;
use courier_store::webhooks::DisabledReason;
use serde_json::{Map, Value, json};
use sqlx::PgConnection;

use crate::fanout::{self, Route};
use crate::{DeliveryStatus, Result, corrupt};

/// One event to announce, for the owner of the webhook it is about.
struct Announcement {
    owner: Owner,
    about: WebhookId,
    event: NewEvent,
}

fn event(event_type: EventType, data: Value) -> NewEvent {
    let Value::Object(map) = data else { unreachable!("operational data is built as an object") };
    NewEvent { id: EventId::generate(), event_type, created: None, data: EventData::operational(map) }
}

fn owner_of(tenant: uuid::Uuid, environment: &str, row: &str) -> Result<Owner> {
    Ok(Owner {
        tenant: TenantId::from_uuid(tenant),
        environment: environment.parse().map_err(corrupt(row, "environment"))?,
    })
}

/// Whether another active webhook of `owner` names `event_type` in its filter: an announcement nobody would
/// receive is not stored (a tenant without operational webhooks should not collect an event per failure).
async fn anyone_listens(conn: &mut PgConnection, a: &Announcement) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM webhooks WHERE tenant_id = $1 AND environment = $2 AND active AND id <> $3
                                                 AND $4 = ANY (event_types))",
    )
    .bind(a.owner.tenant.as_uuid())
    .bind(a.owner.environment.as_str())
    .bind(a.about.as_str())
    .bind(a.event.event_type.as_str())
    .fetch_one(&mut *conn)
    .await?)
}

/// Stores and fans out each announcement someone listens to, in the caller's transaction; returns how many
/// deliveries were queued.
async fn announce(conn: &mut PgConnection, announcements: Vec<Announcement>) -> Result<u64> {
    let mut queued = 0;
    for a in announcements {
        if !anyone_listens(&mut *conn, &a).await? {
            continue;
        }
        let route = Route { about: Some(&a.about), ..Route::default() };
        let stored = fanout::store_events(&mut *conn, a.owner, std::slice::from_ref(&a.event), &[route], None).await?;
        queued += stored.deliveries.iter().flatten().sum::<u64>();
    }
    Ok(queued)
}

/// Announces `webhook.disabled` for each of these webhooks (just disabled for `reason`).
pub(crate) async fn webhooks_disabled(
    conn: &mut PgConnection,
    webhooks: &[WebhookId],
    reason: DisabledReason,
) -> Result<u64> {
    if webhooks.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = webhooks.iter().map(WebhookId::as_str).collect();
    let rows: Vec<(String, uuid::Uuid, String, String)> =
        sqlx::query_as("SELECT id, tenant_id, environment, url FROM webhooks WHERE id = ANY ($1)")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
    let mut announcements = Vec::with_capacity(rows.len());
    for (id, tenant, environment, url) in rows {
        let row = format!("webhook {id}");
        announcements.push(Announcement {
            owner: owner_of(tenant, &environment, &row)?,
            about: WebhookId::parse(&id).map_err(corrupt(&row, "id"))?,
            event: event(EventType::WebhookDisabled, json!({"webhook_id": id, "url": url, "reason": reason.as_str()})),
        });
    }
    announce(conn, announcements).await
}

/// Announces `delivery.exhausted` for each of these deliveries that failed for good (unless it delivered an
/// operational event itself).
pub(crate) async fn deliveries_exhausted(conn: &mut PgConnection, deliveries: &[&str]) -> Result<u64> {
    if deliveries.is_empty() {
        return Ok(0);
    }
    let operational: Vec<&str> = EventType::OPERATIONAL.iter().map(|t| t.as_str()).collect();
    #[derive(sqlx::FromRow)]
    struct Row {
        id: String,
        tenant_id: uuid::Uuid,
        environment: String,
        event_id: String,
        event_type: String,
        webhook_id: String,
        call_id: String,
        attempt_count: i32,
        last_status_code: Option<i32>,
        last_error: Option<String>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, tenant_id, environment, event_id, event_type, webhook_id, call_id, attempt_count,
                last_status_code, last_error
           FROM deliveries WHERE id = ANY ($1) AND status = $3 AND NOT event_type = ANY ($2)",
    )
    .bind(deliveries)
    .bind(&operational)
    .bind(DeliveryStatus::Failed)
    .fetch_all(&mut *conn)
    .await?;
    let mut announcements = Vec::with_capacity(rows.len());
    for r in rows {
        let row = format!("delivery {}", r.id);
        let mut data = Map::new();
        data.insert("delivery_id".into(), json!(r.id));
        data.insert("event_id".into(), json!(r.event_id));
        data.insert("event_type".into(), json!(r.event_type));
        data.insert("webhook_id".into(), json!(r.webhook_id));
        data.insert("call_id".into(), json!(r.call_id));
        data.insert("attempts".into(), json!(r.attempt_count));
        data.insert("last_status_code".into(), json!(r.last_status_code));
        data.insert("last_error".into(), json!(r.last_error));
        announcements.push(Announcement {
            owner: owner_of(r.tenant_id, &r.environment, &row)?,
            about: WebhookId::parse(&r.webhook_id).map_err(corrupt(&row, "webhook id"))?,
            event: event(EventType::DeliveryExhausted, Value::Object(data)),
        });
    }
    announce(conn, announcements).await
}

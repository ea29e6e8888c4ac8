//! A test event: an example event stored for the tenant and delivered to one webhook only, recorded like any
//! other delivery (the portal's "send test event").

use courier_core::{DeliveryId, EventId, EventType, WebhookId, samples};
use courier_store::Owner;
use courier_store::events::{Inserted, NewEvent};
use sqlx::PgPool;

use crate::fanout::{self, Route};
use crate::{Result, logs, wake};

/// What sending a test event came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestSent {
    /// Stored and queued: this delivery carries it.
    Queued { event: EventId, delivery: DeliveryId },
    /// The webhook is not this owner's, is disabled, or its filter takes no event type we could send.
    NotDeliverable,
}

/// The type a test event takes: `call.completed` when the webhook's filter takes it, else the first call event
/// type it does take.
pub fn type_for(accepts: impl Fn(EventType) -> bool) -> Option<EventType> {
    std::iter::once(EventType::CallCompleted).chain(EventType::CALLS).find(|&t| accepts(t))
}

/// Stores an example event of `event_type` for `owner` and fans it out to `webhook` alone, in one transaction;
/// then wakes the workers.
pub async fn send(pool: &PgPool, owner: Owner, webhook: &WebhookId, event_type: EventType) -> Result<TestSent> {
    let id = EventId::generate();
    let call_id = format!("call_test_{}", &id.as_str()[4..]);
    let sample = serde_json::Value::Object(samples::data(event_type, &call_id));
    // Every sample is valid data for its type (core's tests say so); should one not be, nothing is sent.
    let Ok(data) = courier_core::EventData::parse_as(event_type, sample) else {
        return Ok(TestSent::NotDeliverable);
    };
    let event = NewEvent { id, event_type, created: None, data };
    let mut tx = pool.begin().await?;
    let route = Route { only: Some(webhook), ..Route::default() };
    let stored = fanout::store_events(&mut tx, owner, std::slice::from_ref(&event), &[route], None).await?;
    if stored.deliveries.first().copied().flatten().unwrap_or(0) == 0 {
        // Not new (an id collision), or nothing to deliver to: keep no event nobody will receive.
        return Ok(TestSent::NotDeliverable);
    }
    let Some(Inserted::New(stored)) = stored.inserted.into_iter().next() else {
        return Ok(TestSent::NotDeliverable);
    };
    let delivery = logs::for_event(&mut *tx, owner, &stored.event.id).await?.into_iter().next().map(|d| d.id);
    tx.commit().await?;
    wake::notify(pool).await?;
    match delivery {
        Some(delivery) => Ok(TestSent::Queued { event: stored.event.id, delivery }),
        None => Ok(TestSent::NotDeliverable),
    }
}

//! `/api/v1/events`: ingest from the emitter (singly or in batches) and reading events back.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use courier_core::event::DataError;
use courier_core::{EventData, EventId, EventType, Scope};
use courier_scheduler::ingest::{self, Refused};
use courier_scheduler::logs;
use courier_store::Owner;
use courier_store::events::{self, NewEvent, StoredEvent};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::deliveries::DeliveryOutput;
use super::{EventPageParams, Page, page_limit};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorDetail, ErrorResponse};
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;

/// The most events one batch request may carry.
pub const MAX_BATCH: usize = 1000;

/// One call lifecycle event, as the emitter posts it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    /// `evt_…`; generated when omitted. Posting the same id again is idempotent.
    #[schema(example = "evt_abc123", pattern = "^evt_[A-Za-z0-9_-]{1,100}$")]
    pub id: Option<String>,
    /// `call.started`, `call.connected`, `call.completed`, `call.failed`, `call.disconnected` or `call.agent.changed`.
    #[serde(rename = "type")]
    #[schema(value_type = super::EventTypeName, example = "call.completed")]
    pub event_type: String,
    /// Unix seconds between 2000-01-01 and 2100-01-01; the time of ingest when omitted. An integral JSON number
    /// written with a fraction (`1705680000.0`) is the same integer.
    #[schema(example = 1705680000, minimum = 946684800.0, maximum = 4102444800.0)]
    #[serde(default, deserialize_with = "crate::extract::whole::optional")]
    pub created: Option<i64>,
    /// A JSON object with a string `call_id`; everything else passes through.
    #[schema(value_type = EventDataDoc, example = json!({"call_id": "call-uuid", "status": "completed"}))]
    pub data: serde_json::Value,
}

/// The documented shape of an event's `data`; the handler keeps it as raw JSON so other fields pass through.
#[derive(ToSchema)]
#[allow(dead_code)] // Only read by the OpenAPI generator.
pub struct EventDataDoc {
    #[schema(min_length = 1, max_length = 256)]
    call_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchInput {
    /// 1 to 1,000 events (each as `POST /api/v1/events` takes one), processed in one transaction. Each item is
    /// validated on its own: an invalid item is that item's error in the answer, not the request's.
    #[schema(min_items = 1, max_items = 1000, value_type = Vec<Object>)]
    pub events: BatchItems,
}

/// A batch's items, each kept as its raw JSON text until it is validated on its own (so one bad item is that
/// item's error). Parsing stops at the 1,001st item: a body of millions of tiny objects never becomes millions of
/// JSON trees in memory.
#[derive(Debug)]
pub struct BatchItems(Vec<Box<serde_json::value::RawValue>>);

impl<'de> Deserialize<'de> for BatchItems {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bounded;
        impl<'de> serde::de::Visitor<'de> for Bounded {
            type Value = BatchItems;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "an array of 1 to {MAX_BATCH} events")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<BatchItems, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Box<serde_json::value::RawValue>>()? {
                    if items.len() == MAX_BATCH {
                        return Err(serde::de::Error::custom(format!("must hold 1 to {MAX_BATCH} events")));
                    }
                    // Each item is validated on its own, but must at least be an object to be an event at all.
                    if !item.get().starts_with('{') {
                        return Err(serde::de::Error::custom(format!("item {} is not a JSON object", items.len())));
                    }
                    items.push(item);
                }
                Ok(BatchItems(items))
            }
        }
        deserializer.deserialize_seq(Bounded)
    }
}

/// An accepted event: its id and how many deliveries it fanned out to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Accepted {
    pub id: String,
    pub deliveries: u64,
}

impl From<&ingest::Accepted> for Accepted {
    fn from(accepted: &ingest::Accepted) -> Self {
        Self { id: accepted.id.to_string(), deliveries: accepted.deliveries }
    }
}

fn refused(why: Refused) -> ApiError {
    match why {
        Refused::Conflict => ApiError::conflict(why.to_string()),
    }
}

/// Hands validated events to the ingest use case and counts the ones stored for the first time.
async fn submit(state: &AppState, owner: Owner, events: Vec<NewEvent>) -> ApiResult<Vec<ingest::Answer>> {
    let types: Vec<EventType> = events.iter().map(|e| e.event_type).collect();
    let answers = state.ingest.submit(owner, events, crate::trace::current()).await?;
    for (event_type, answer) in types.into_iter().zip(&answers) {
        if matches!(answer, Ok(accepted) if accepted.first_time) {
            metrics::counter!("courier_events_ingested_total", "type" => event_type.as_str()).increment(1);
        }
    }
    Ok(answers)
}

/// One item of a batch answer: the accepted event or that item's error.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum BatchItem {
    Accepted(Accepted),
    Error { error: ErrorBody },
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchOutput {
    pub data: Vec<BatchItem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventOutput {
    pub id: String,
    #[serde(rename = "type")]
    #[schema(example = "call.completed")]
    pub event_type: &'static str,
    pub created: i64,
    pub livemode: bool,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub received_at: DateTime<Utc>,
    /// Only on `GET /api/v1/events/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<Vec<DeliveryOutput>>,
}

impl EventOutput {
    fn new(stored: StoredEvent, deliveries: Option<Vec<DeliveryOutput>>) -> Self {
        Self {
            id: stored.event.id.to_string(),
            event_type: stored.event.event_type.as_str(),
            created: stored.event.created,
            livemode: stored.event.livemode,
            data: stored.event.data.to_value(),
            received_at: stored.received_at,
            deliveries,
        }
    }
}

/// 2000-01-01T00:00:00Z: the earliest `created` accepted.
const EARLIEST_CREATED: i64 = 946_684_800;
/// 2100-01-01T00:00:00Z: the latest `created` accepted (a fixed bound, so the OpenAPI document can state it).
const LATEST_CREATED: i64 = 4_102_444_800;

/// Why an event that did not come over HTTP (a Kafka record) was not accepted: the reason as the ingest metrics and
/// its set-aside list name it (`not_json`, `invalid`, `too_large`), and what is wrong, as the API would say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAnEvent {
    pub reason: &'static str,
    pub message: String,
}

/// One event in exactly the JSON `POST /api/v1/events` takes, checked as it checks it (at most
/// [`crate::EVENT_BODY_LIMIT`] bytes); `id_if_absent` stands in for a missing `id`.
pub fn event_from_json(bytes: &[u8], id_if_absent: impl FnOnce() -> EventId) -> Result<NewEvent, NotAnEvent> {
    if bytes.len() > crate::EVENT_BODY_LIMIT {
        let message = format!("{} bytes; the limit is {}", bytes.len(), crate::EVENT_BODY_LIMIT);
        return Err(NotAnEvent { reason: "too_large", message });
    }
    let mut input: EventInput = serde_json::from_slice(bytes)
        .map_err(|e| NotAnEvent { reason: "not_json", message: format!("not an event's JSON: {e}") })?;
    if input.id.is_none() {
        input.id = Some(id_if_absent().to_string());
    }
    validate(input, "").map_err(|refused| {
        let status = refused.status();
        let body = refused.into_body();
        let details: Vec<String> = body.details.iter().map(|d| format!("{}: {}", d.field, d.message)).collect();
        let reason = if status == StatusCode::PAYLOAD_TOO_LARGE { "too_large" } else { "invalid" };
        let message = if details.is_empty() { body.message } else { details.join("; ") };
        NotAnEvent { reason, message }
    })
}

/// Validates one posted event; `prefix` names its place in a batch (`events[3].`).
fn validate(input: EventInput, prefix: &str) -> Result<NewEvent, ApiError> {
    let mut details = Vec::new();
    let mut bad =
        |field: &str, message: String| details.push(ErrorDetail { field: format!("{prefix}{field}"), message });
    let id = match input.id {
        None => Some(EventId::generate()),
        Some(text) => EventId::parse(&text)
            .map_err(|_| bad("id", "must be `evt_` followed by 1 to 100 letters, digits, `_` or `-`".to_owned()))
            .ok(),
    };
    let calls = || EventType::CALLS.map(|t| t.as_str()).join(", ");
    let event_type = match input.event_type.parse::<EventType>() {
        Ok(t) if t.is_operational() => {
            bad("type", format!("`{t}` is emitted by Courier itself; post one of {}", calls()));
            None
        }
        Ok(t) => Some(t),
        Err(e) => {
            bad("type", format!("{e}; expected one of {}", calls()));
            None
        }
    };
    // A time before 2000 or after 2100 is a mistake (milliseconds sent as seconds, say), not an event.
    if input.created.is_some_and(|c| !(EARLIEST_CREATED..=LATEST_CREATED).contains(&c)) {
        bad("created", "must be unix seconds between 2000-01-01 and 2100-01-01".to_owned());
    }
    let data = match EventData::parse(input.data) {
        Ok(data) => Some(data),
        Err(DataError::TooLarge { size, limit }) => {
            return Err(ApiError::too_large(format!("{prefix}data is {size} bytes; the limit is {limit}")));
        }
        Err(e @ (DataError::CallIdTooLong | DataError::MissingCallId)) => {
            bad("data.call_id", e.to_string());
            None
        }
        Err(e) => {
            bad("data", e.to_string());
            None
        }
    };
    match (id, event_type, data) {
        (Some(id), Some(event_type), Some(data)) if details.is_empty() => {
            Ok(NewEvent { id, event_type, created: input.created, data })
        }
        _ => Err(ApiError::validation(details)),
    }
}

/// Post an event
///
/// Stored and fanned out (one delivery per matching enabled webhook) in one transaction.
/// 201 when new; 200 with the first answer when the same id and body were posted before; 409 when the id was used
/// for a different event.
#[utoipa::path(post, path = "/api/v1/events", tag = "events", request_body = EventInput,
    security(("api_key" = ["events:write"])),
    responses((status = 201, body = Accepted), (status = 200, body = Accepted, description = "an idempotent repeat"),
              (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
              (status = 409, body = ErrorResponse), (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse),
              (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse)))]
pub async fn ingest(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<EventInput>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let owner = principal.require(Scope::EventsWrite)?;
    let new = validate(body, "")?;
    let mut results = submit(&state, owner, vec![new]).await?;
    let accepted = results.pop().ok_or_else(|| ApiError::internal("ingest returned no result"))?.map_err(refused)?;
    let status = if accepted.first_time { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(Accepted::from(&accepted))))
}

/// Post a batch of events
///
/// Up to 1,000 events in one transaction. The answer has one item per event, in order: the accepted event or that
/// item's error (`validation_failed`, `conflict`, `payload_too_large`). Valid items are accepted even when others fail.
#[utoipa::path(post, path = "/api/v1/events/batch", tag = "events", request_body = BatchInput,
    security(("api_key" = ["events:write"])),
    responses((status = 200, body = BatchOutput), (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
              (status = 403, body = ErrorResponse), (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse),
              (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse)))]
pub async fn ingest_batch(
    State(state): State<AppState>,
    principal: Principal,
    request: axum::extract::Request,
) -> ApiResult<Json<BatchOutput>> {
    // The key and its scope first: a key that may not post events never makes the server read a 16 MiB body.
    let owner = principal.require(Scope::EventsWrite)?;
    // The upload first, held to the route's limit and the request's deadline, holding nothing shared: a client
    // trickling its body delays only itself. Parsing is what multiplies memory, so that takes a turn, of a few per
    // process, and at most a tenant's share of them.
    let bytes = crate::extract::read_body(request, &state).await?;
    let turn = state.large_bodies.turn(owner.tenant).await?;
    let body: BatchInput = crate::extract::parse_json(&bytes)?;
    drop(bytes);
    let events = body.events.0;
    if events.is_empty() {
        return Err(ApiError::invalid("events", format!("must hold 1 to {MAX_BATCH} events")));
    }
    // The request took one token; a batch is as many posts as it has events.
    state.limiter.check_n(&principal.key_id, events.len() - 1).map_err(ApiError::rate_limited)?;
    let mut items: Vec<Option<BatchItem>> = Vec::with_capacity(events.len());
    let mut valid = Vec::with_capacity(events.len());
    let mut positions = Vec::with_capacity(events.len());
    for (i, raw) in events.into_iter().enumerate() {
        let prefix = format!("events[{i}].");
        let parsed = serde_json::from_str::<EventInput>(raw.get())
            .map_err(|e| ApiError::invalid(format!("events[{i}]"), e.to_string()))
            .and_then(|input| validate(input, &prefix));
        match parsed {
            Ok(new) => {
                valid.push(new);
                positions.push(i);
                items.push(None);
            }
            Err(err) => items.push(Some(BatchItem::Error { error: err.into_body() })),
        }
    }
    // Parsed: what remains is at most 1,000 validated events; the next large body may be read meanwhile.
    drop(turn);
    let results = submit(&state, owner, valid).await?;
    for (position, result) in positions.into_iter().zip(results) {
        items[position] = Some(match result {
            Ok(accepted) => BatchItem::Accepted(Accepted::from(&accepted)),
            Err(why) => BatchItem::Error { error: refused(why).into_body() },
        });
    }
    Ok(Json(BatchOutput { data: items.into_iter().flatten().collect() }))
}

fn event_cursor(stored: &StoredEvent) -> String {
    format!("{}~{}", stored.received_at.timestamp_micros(), stored.event.id)
}

fn parse_event_cursor(cursor: &str) -> Result<(DateTime<Utc>, EventId), ApiError> {
    let bad = || ApiError::invalid("cursor", "not a cursor this list returned");
    let (micros, id) = cursor.split_once('~').ok_or_else(bad)?;
    let at = DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    Ok((at, EventId::parse(id).map_err(|_| bad())?))
}

/// List events
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventPageParams),
    security(("api_key" = ["deliveries:read"])),
    responses((status = 200, body = Page<EventOutput>), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
              (status = 422, body = ErrorResponse), (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<EventPageParams>,
) -> ApiResult<Json<Page<EventOutput>>> {
    let owner = principal.require(Scope::DeliveriesRead)?;
    let limit = page_limit(params.limit)?;
    let before = params.cursor.as_deref().map(parse_event_cursor).transpose()?;
    let rows = events::list(state.reader(), owner, before.as_ref().map(|(at, id)| (*at, id)), limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, event_cursor, |s| EventOutput::new(s, None))))
}

/// Get an event with its deliveries
#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "events", params(("id" = String, Path, description = "evt_…")),
    security(("api_key" = ["deliveries:read"])),
    responses((status = 200, body = EventOutput), (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
              (status = 404, body = ErrorResponse), (status = 429, body = ErrorResponse), (status = 503, body = ErrorResponse)))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<EventOutput>> {
    let owner = principal.require(Scope::DeliveriesRead)?;
    let id = EventId::parse(&id).map_err(|_| ApiError::not_found("event"))?;
    let mut reader = state.reader();
    let mut found = events::get(reader, owner, &id).await?;
    if let (None, Some(primary)) = (&found, state.primary_on_miss()) {
        reader = primary;
        found = events::get(reader, owner, &id).await?;
    }
    let stored = found.ok_or_else(|| ApiError::not_found("event"))?;
    let deliveries = logs::for_event(reader, owner, &id).await?;
    Ok(Json(EventOutput::new(stored, Some(deliveries.into_iter().map(|d| DeliveryOutput::new(d, None)).collect()))))
}

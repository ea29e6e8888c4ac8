//! What the webhook routes read and write: request bodies and their validation (each problem a 422 naming its
//! field), and the webhook as the API shows it (secret once, custom header values masked).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use courier_core::{CustomHeaders, EventSelector};
use courier_store::webhooks::{self, Webhook, WebhookPatch};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::super::double_option;
use super::destination::{DestinationInput, check_broker_headers, target_of};
use crate::error::{ApiError, ErrorDetail};

/// Which events a webhook receives and what of their data.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterInput {
    /// Event types, or `["*"]` (the default) for all.
    #[schema(example = json!(["call.completed", "call.failed"]), min_items = 1, max_items = 64,
             value_type = Option<Vec<super::super::EventSelectorName>>)]
    pub events: Option<Vec<String>>,
    /// Keep `data.transcript` (personal data; off by default).
    pub include_transcript: Option<bool>,
    /// Keep `data.metrics` (off by default).
    pub include_metrics: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where to POST deliveries: the short form of `{"destination": {"type": "http", "url": …}}`. Give `url` or
    /// `destination`.
    #[schema(example = "https://your-backend.com/webhooks/agent-studio", max_length = 2048)]
    pub url: Option<String>,
    pub destination: Option<DestinationInput>,
    pub filter: Option<FilterInput>,
    #[schema(max_length = 1024)]
    pub description: Option<String>,
    /// 1 to 25; the server default (5) when omitted.
    #[schema(minimum = 1, maximum = 25)]
    #[serde(default, deserialize_with = "crate::extract::whole::optional")]
    pub max_attempts: Option<u32>,
    /// `call`: deliveries that share a `call_id` go one at a time, in the order their events were accepted;
    /// `none` (the default): as soon as they are due.
    pub ordering: Option<OrderingInput>,
    /// Up to 10 headers sent with every attempt beside the signature (e.g. an API gateway's key). Stored encrypted,
    /// shown masked. `Host`, framing, hop-by-hop, `User-Agent` and the signature headers are refused.
    #[schema(example = json!({"X-Api-Key": "gateway-key"}))]
    pub headers: Option<BTreeMap<String, String>>,
    /// At most this many deliveries per second, summed over every worker; the excess waits as pending.
    pub rate_limit: Option<WebhookRateLimit>,
}

/// A webhook's rate limit.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRateLimit {
    #[schema(minimum = 1, maximum = 10000, example = 20)]
    #[serde(deserialize_with = "crate::extract::whole::required")]
    pub per_second: u32,
}

/// The most deliveries per second a limit may name (above it, leave the webhook unlimited).
const MAX_RATE: u32 = 10_000;

pub(super) fn check_rate(limit: &WebhookRateLimit) -> Result<u32, ApiError> {
    if !(1..=MAX_RATE).contains(&limit.per_second) {
        return Err(ApiError::invalid("rate_limit.per_second", format!("must be between 1 and {MAX_RATE}")));
    }
    Ok(limit.per_second)
}

/// A webhook's delivery order.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderingInput {
    None,
    Call,
}

impl From<OrderingInput> for webhooks::Ordering {
    fn from(o: OrderingInput) -> Self {
        match o {
            OrderingInput::None => webhooks::Ordering::None,
            OrderingInput::Call => webhooks::Ordering::Call,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    /// Moves the webhook to this HTTP URL (from a broker too).
    pub url: Option<String>,
    /// Moves the webhook to this destination; give `url` or `destination`, not both.
    pub destination: Option<DestinationInput>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// Only the fields given change.
    pub filter: Option<FilterInput>,
    #[schema(minimum = 1, maximum = 25)]
    #[serde(default, deserialize_with = "crate::extract::whole::optional")]
    pub max_attempts: Option<u32>,
    /// Applies to deliveries created from now on.
    pub ordering: Option<OrderingInput>,
    /// Replaces every custom header; `{}` removes them.
    pub headers: Option<BTreeMap<String, String>>,
    /// `null` removes the limit.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<WebhookRateLimit>)]
    pub rate_limit: Option<Option<WebhookRateLimit>>,
    /// `enabled` or `disabled`; disabling cancels the webhook's pending deliveries.
    pub status: Option<StatusInput>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusInput {
    Enabled,
    Disabled,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FilterOutput {
    #[schema(example = json!(["call.completed", "call.failed"]))]
    pub events: Vec<&'static str>,
    pub include_transcript: bool,
    pub include_metrics: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookOutput {
    #[schema(example = "wh_01JD3Z6V8Q2N7K4M5P6R7S8T9V")]
    pub id: String,
    /// The URL it POSTs to, or its broker's URL with credentials masked.
    pub url: String,
    /// Where it delivers: `{"type": "http", "url": …}`, or a broker's fields with credentials masked.
    #[schema(value_type = Object, example = json!({"type": "http", "url": "https://your-backend.com/webhooks/agent-studio"}))]
    pub destination: serde_json::Value,
    pub description: Option<String>,
    pub filter: FilterOutput,
    /// `enabled` or `disabled`.
    pub status: &'static str,
    /// Why it is disabled: `manual`, `gone` (the receiver answered 410) or `failing`.
    pub disabled_reason: Option<&'static str>,
    pub livemode: bool,
    pub max_attempts: u32,
    /// `none` or `call` (per-call ordering).
    pub ordering: &'static str,
    pub rate_limit: Option<WebhookRateLimit>,
    /// Custom header names, values masked.
    #[schema(example = json!({"X-Api-Key": "********"}))]
    pub headers: BTreeMap<String, &'static str>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Until when the previous secret still signs, during a rotation.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// `whsec_…`: only in the creation and rotation responses. Save it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub secret: Option<courier_core::Redacted<String>>,
}

impl WebhookOutput {
    pub(super) fn new(w: Webhook, secret: Option<String>) -> Self {
        let secret = secret.map(courier_core::Redacted);
        Self {
            id: w.id.to_string(),
            destination: w.destination.unwrap_or_else(|| serde_json::json!({"type": "http", "url": w.url})),
            url: w.url,
            description: w.description,
            filter: FilterOutput {
                events: w.events.names(),
                include_transcript: w.payload.include_transcript,
                include_metrics: w.payload.include_metrics,
            },
            status: w.status.as_str(),
            disabled_reason: w.status.disabled_reason().map(|r| r.as_str()),
            livemode: w.owner.environment.is_live(),
            max_attempts: w.max_attempts,
            ordering: w.ordering.as_str(),
            headers: w.header_names.into_iter().map(|name| (name, "********")).collect(),
            rate_limit: w.rate_limit.map(|per_second| WebhookRateLimit { per_second }),
            created_at: w.created_at,
            updated_at: w.updated_at,
            previous_secret_expires_at: w.previous_secret_expires_at,
            secret,
        }
    }
}

/// Custom headers as given, validated; a 422 names the header.
pub(super) fn parse_headers(headers: BTreeMap<String, String>) -> Result<CustomHeaders, ApiError> {
    CustomHeaders::new(headers.into_iter().collect()).map_err(|(name, err)| {
        let field = if name.is_empty() { "headers".to_owned() } else { format!("headers.{name}") };
        ApiError::invalid(field, err.to_string())
    })
}

/// The most entries a filter list may hold: every event type and `*` fit many times over.
pub(crate) const MAX_FILTER_ENTRIES: usize = 64;

pub(super) fn parse_events(events: &[String]) -> Result<EventSelector, ApiError> {
    if events.len() > MAX_FILTER_ENTRIES {
        return Err(ApiError::invalid("filter.events", format!("must hold at most {MAX_FILTER_ENTRIES} entries")));
    }
    EventSelector::parse(events.iter().map(String::as_str)).map_err(|e| {
        let message = if e.0.is_empty() {
            "must name at least one event type, or \"*\"".to_owned()
        } else {
            format!(
                "unknown event type `{}`; expected one of {}",
                e.0,
                courier_core::EventType::ALL.map(|t| t.as_str()).join(", ")
            )
        };
        ApiError::invalid("filter.events", message)
    })
}

pub(super) fn check_max_attempts(n: u32) -> Result<u32, ApiError> {
    if (1..=25).contains(&n) { Ok(n) } else { Err(ApiError::invalid("max_attempts", "must be between 1 and 25")) }
}

pub(super) fn check_description(d: &Option<String>) -> Result<(), ApiError> {
    match d {
        Some(text) if text.len() > 1024 => Err(ApiError::invalid("description", "must be at most 1024 bytes")),
        // PostgreSQL's text cannot hold NUL: refused here with a 422 rather than failing the insert with a 500.
        Some(text) if text.contains('\0') => Err(ApiError::invalid("description", "must not contain NUL characters")),
        _ => Ok(()),
    }
}

/// A field's value when it was given and valid; an invalid one adds its details to `details` instead, so every
/// invalid field of a body is reported at once.
fn valid<T>(field: Option<Result<T, ApiError>>, details: &mut Vec<ErrorDetail>) -> Option<T> {
    match field? {
        Ok(value) => Some(value),
        Err(e) => {
            details.extend(e.into_body().details);
            None
        }
    }
}

/// A PATCH body as a store patch; every invalid field is reported at once.
pub(super) fn patch_of(
    body: UpdateWebhook,
    environment: courier_core::Environment,
    rules: &crate::state::WebhookRules,
) -> Result<WebhookPatch, ApiError> {
    let mut details: Vec<ErrorDetail> = Vec::new();
    let target = valid(target_of(body.url, body.destination, environment, rules, false).transpose(), &mut details);
    let filter = body.filter.unwrap_or_default();
    let events = valid(filter.events.as_deref().map(parse_events), &mut details);
    valid(body.max_attempts.map(check_max_attempts), &mut details);
    valid(body.description.as_ref().map(check_description), &mut details);
    let rate_limit = valid(body.rate_limit.map(|limit| limit.as_ref().map(check_rate).transpose()), &mut details);
    let headers = valid(body.headers.map(parse_headers), &mut details);
    if !details.is_empty() {
        return Err(ApiError::validation(details));
    }
    let (url, broker) = target.map_or((None, None), |(url, broker)| (Some(url), Some(broker)));
    if let (Some(broker), Some(headers)) = (&broker, &headers) {
        check_broker_headers(broker.as_ref(), headers)?;
    }
    Ok(WebhookPatch {
        url,
        broker,
        description: body.description,
        events,
        include_transcript: filter.include_transcript,
        include_metrics: filter.include_metrics,
        max_attempts: body.max_attempts,
        ordering: body.ordering.map(Into::into),
        headers,
        rate_limit,
    })
}

//! The routes, one module per resource.

pub mod deliveries;
pub mod events;
pub mod health;
pub mod portal_sessions;
pub mod relay;
pub mod webhooks;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

/// The six event type names, for the OpenAPI document (the handlers parse them into `courier_core::EventType`,
/// which stays free of documentation dependencies).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Only read by the OpenAPI generator.
pub enum EventTypeName {
    #[serde(rename = "call.started")]
    CallStarted,
    #[serde(rename = "call.connected")]
    CallConnected,
    #[serde(rename = "call.completed")]
    CallCompleted,
    #[serde(rename = "call.failed")]
    CallFailed,
    #[serde(rename = "call.disconnected")]
    CallDisconnected,
    #[serde(rename = "call.agent.changed")]
    CallAgentChanged,
}

/// An event type name or `*` (every type), for the OpenAPI document of webhook filters.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // Only read by the OpenAPI generator.
pub enum EventSelectorName {
    #[serde(rename = "*")]
    All,
    #[serde(rename = "call.started")]
    CallStarted,
    #[serde(rename = "call.connected")]
    CallConnected,
    #[serde(rename = "call.completed")]
    CallCompleted,
    #[serde(rename = "call.failed")]
    CallFailed,
    #[serde(rename = "call.disconnected")]
    CallDisconnected,
    #[serde(rename = "call.agent.changed")]
    CallAgentChanged,
    /// Emitted by Courier; only when named (`*` does not include it).
    #[serde(rename = "webhook.disabled")]
    WebhookDisabled,
    /// Emitted by Courier; only when named (`*` does not include it).
    #[serde(rename = "delivery.exhausted")]
    DeliveryExhausted,
}

/// A delivery status name, for the OpenAPI document.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // Only read by the OpenAPI generator.
pub enum DeliveryStatusName {
    /// Waiting for an earlier delivery of the same call to this webhook (per-call ordering).
    Waiting,
    Pending,
    Delivering,
    Succeeded,
    Failed,
    Cancelled,
}

pub const DEFAULT_PAGE: u32 = 20;
pub const MAX_PAGE: u32 = 100;

/// A page of a list, newest first. Pass `next_cursor` back as `cursor` for the next page; `null` means the end.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched rows: the extra row only says there is more.
    pub fn from_rows<R>(mut rows: Vec<R>, limit: u32, cursor_of: impl Fn(&R) -> String, map: impl Fn(R) -> T) -> Self {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = if more { rows.last().map(&cursor_of) } else { None };
        Page { data: rows.into_iter().map(map).collect(), next_cursor }
    }
}

/// `limit` and `cursor` of the webhook list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// 1 to 100; 20 by default.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page (a webhook id).
    #[param(pattern = "^wh_[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
    pub cursor: Option<String>,
}

/// `limit` and `cursor` of the event list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventPageParams {
    /// 1 to 100; 20 by default.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page (`<microseconds>~<event id>`).
    #[param(pattern = "^[0-9]{1,16}~evt_[A-Za-z0-9_-]{1,100}$")]
    pub cursor: Option<String>,
}

pub fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n @ 1..=MAX_PAGE) => Ok(n),
        Some(_) => Err(ApiError::invalid("limit", "must be between 1 and 100")),
    }
}

/// Distinguishes an absent field from an explicit `null` (which clears it).
pub fn double_option<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

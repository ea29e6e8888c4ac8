//! A webhook as the store gives it out and takes it in: its status (and why it is disabled), its ordering, and the
//! values to create or change one.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use courier_core::{Broker, CustomHeaders, EventSelector, PayloadFilter, WebhookId};

use crate::Owner;

/// Why a webhook stopped receiving deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisabledReason {
    /// A tenant or operator turned it off.
    Manual,
    /// The receiver answered 410 Gone.
    Gone,
    /// Every delivery failed for longer than the auto-disable window.
    Failing,
}

impl DisabledReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DisabledReason::Manual => "manual",
            DisabledReason::Gone => "gone",
            DisabledReason::Failing => "failing",
        }
    }
}

impl fmt::Display for DisabledReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reason for a disabled webhook `{0}`")]
pub struct UnknownReason(pub String);

impl FromStr for DisabledReason {
    type Err = UnknownReason;
    fn from_str(s: &str) -> Result<Self, UnknownReason> {
        match s {
            "manual" => Ok(DisabledReason::Manual),
            "gone" => Ok(DisabledReason::Gone),
            "failing" => Ok(DisabledReason::Failing),
            _ => Err(UnknownReason(s.to_owned())),
        }
    }
}

/// Whether deliveries that share a call_id go one at a time, in the order their events were accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ordering {
    /// Deliveries go as soon as they are due, in parallel.
    #[default]
    None,
    /// Per call: a delivery waits until every earlier delivery of its call to this webhook ended.
    Call,
}

impl Ordering {
    pub fn as_str(self) -> &'static str {
        match self {
            Ordering::None => "none",
            Ordering::Call => "call",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown ordering `{0}` (expected `none` or `call`)")]
pub struct UnknownOrdering(pub String);

impl FromStr for Ordering {
    type Err = UnknownOrdering;
    fn from_str(s: &str) -> Result<Self, UnknownOrdering> {
        match s {
            "none" => Ok(Ordering::None),
            "call" => Ok(Ordering::Call),
            _ => Err(UnknownOrdering(s.to_owned())),
        }
    }
}

/// Enabled, or disabled for a reason: a disabled webhook without a reason cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookStatus {
    Enabled,
    Disabled(DisabledReason),
}

impl WebhookStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookStatus::Enabled => "enabled",
            WebhookStatus::Disabled(_) => "disabled",
        }
    }

    pub fn disabled_reason(self) -> Option<DisabledReason> {
        match self {
            WebhookStatus::Enabled => None,
            WebhookStatus::Disabled(reason) => Some(reason),
        }
    }

    /// The two columns as stored; every other combination is refused by a CHECK constraint and by this parser.
    pub(crate) fn from_columns(status: &str, reason: Option<&str>) -> Result<Self, UnknownReason> {
        match (status, reason) {
            ("enabled", None) => Ok(WebhookStatus::Enabled),
            ("disabled", Some(reason)) => Ok(WebhookStatus::Disabled(reason.parse()?)),
            (status, reason) => Err(UnknownReason(format!("{status}/{}", reason.unwrap_or("none")))),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub id: WebhookId,
    pub owner: Owner,
    /// Where it delivers: the URL it POSTs to, or its broker's URL with credentials masked.
    pub url: String,
    /// Its broker destination as shown (credentials masked); `None` for an HTTP webhook.
    pub destination: Option<serde_json::Value>,
    pub description: Option<String>,
    pub events: EventSelector,
    pub payload: PayloadFilter,
    pub max_attempts: u32,
    pub ordering: Ordering,
    /// The names of its custom headers; their values are sealed and never read back through the store.
    pub header_names: Vec<String>,
    /// At most this many deliveries per second, summed over every worker process.
    pub rate_limit: Option<u32>,
    pub status: WebhookStatus,
    /// When a rotation's previous secret stops signing, while it still does.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A broker destination to store: the broker as the worker uses it (stored sealed) and as the API shows it.
#[derive(Debug, Clone)]
pub struct BrokerDestination {
    pub broker: Broker,
    /// [`Broker::shown`]: every field, credentials masked.
    pub shown: serde_json::Value,
}

/// A webhook to create. The URL is validated by the caller (the API knows the policy).
#[derive(Debug, Clone)]
pub struct NewWebhook {
    /// The URL it POSTs to, or its broker's URL with credentials masked.
    pub url: String,
    /// Where it publishes instead of POSTing, when it does.
    pub broker: Option<BrokerDestination>,
    pub description: Option<String>,
    pub events: EventSelector,
    pub payload: PayloadFilter,
    pub max_attempts: u32,
    pub ordering: Ordering,
    pub headers: CustomHeaders,
    pub rate_limit: Option<u32>,
}

/// A partial update: `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    pub url: Option<String>,
    /// Set with `url`: `Some(None)` makes it an HTTP webhook, `Some(Some(_))` a broker's.
    pub broker: Option<Option<BrokerDestination>>,
    /// `Some(None)` clears the description.
    pub description: Option<Option<String>>,
    pub events: Option<EventSelector>,
    pub include_transcript: Option<bool>,
    pub include_metrics: Option<bool>,
    pub max_attempts: Option<u32>,
    /// Applies to deliveries created from now on.
    pub ordering: Option<Ordering>,
    /// Replaces every custom header (empty removes them all).
    pub headers: Option<CustomHeaders>,
    /// `Some(None)` removes the limit.
    pub rate_limit: Option<Option<u32>>,
}

//! Call lifecycle events as the emitter posts them and as Courier stores them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::id::{EventId, TenantId};

/// The six call lifecycle event types of the integration guide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
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
    /// Emitted by Courier: one of the tenant's webhooks was disabled (`gone`, `failing` or `manual`).
    #[serde(rename = "webhook.disabled")]
    WebhookDisabled,
    /// Emitted by Courier: a delivery failed for good after its last allowed attempt.
    #[serde(rename = "delivery.exhausted")]
    DeliveryExhausted,
}

impl EventType {
    /// What emitters post, and what `"*"` selects.
    pub const CALLS: [EventType; 6] = [
        EventType::CallStarted,
        EventType::CallConnected,
        EventType::CallCompleted,
        EventType::CallFailed,
        EventType::CallDisconnected,
        EventType::CallAgentChanged,
    ];

    /// What Courier itself emits into a tenant's stream; a webhook receives these only when its filter names them.
    pub const OPERATIONAL: [EventType; 2] = [EventType::WebhookDisabled, EventType::DeliveryExhausted];

    pub const ALL: [EventType; 8] = [
        EventType::CallStarted,
        EventType::CallConnected,
        EventType::CallCompleted,
        EventType::CallFailed,
        EventType::CallDisconnected,
        EventType::CallAgentChanged,
        EventType::WebhookDisabled,
        EventType::DeliveryExhausted,
    ];

    pub fn is_operational(self) -> bool {
        Self::OPERATIONAL.contains(&self)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::CallStarted => "call.started",
            EventType::CallConnected => "call.connected",
            EventType::CallCompleted => "call.completed",
            EventType::CallFailed => "call.failed",
            EventType::CallDisconnected => "call.disconnected",
            EventType::CallAgentChanged => "call.agent.changed",
            EventType::WebhookDisabled => "webhook.disabled",
            EventType::DeliveryExhausted => "delivery.exhausted",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type `{0}`")]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

/// Which event types a webhook receives: every type (`["*"]` or omitted on the wire) or a chosen set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSelector {
    All,
    Only(Vec<EventType>),
}

impl EventSelector {
    /// Builds a selector from wire names; `*` anywhere means all. An empty list is refused: it would receive nothing.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, UnknownEventType> {
        let mut types = Vec::new();
        for name in names {
            if name == "*" {
                return Ok(EventSelector::All);
            }
            types.push(name.parse::<EventType>()?);
        }
        if types.is_empty() {
            return Err(UnknownEventType(String::new()));
        }
        types.sort();
        types.dedup();
        Ok(EventSelector::Only(types))
    }

    pub fn matches(&self, t: EventType) -> bool {
        match self {
            EventSelector::All => !t.is_operational(),
            EventSelector::Only(types) => types.contains(&t),
        }
    }

    /// The wire form: `["*"]` or the sorted type names.
    pub fn names(&self) -> Vec<&'static str> {
        match self {
            EventSelector::All => vec!["*"],
            EventSelector::Only(types) => types.iter().map(|t| t.as_str()).collect(),
        }
    }
}

/// Why an event's `data` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("`data` must be a JSON object")]
    NotAnObject,
    #[error("`data.call_id` must be a non-empty string")]
    MissingCallId,
    #[error("`data.call_id` must be at most 256 bytes")]
    CallIdTooLong,
    #[error("`data` is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    /// PostgreSQL's `jsonb` cannot hold U+0000, so such an event could never be stored.
    #[error("`data` must not contain the character U+0000 (`\\u0000`)")]
    NulCharacter,
}

/// True when a string anywhere in `value` (a key or a value) holds U+0000.
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// An event's `data`: a JSON object with a non-empty string `call_id`, at most [`EventData::MAX_BYTES`] serialised.
/// Every other field passes through untouched.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct EventData(Map<String, Value>);

impl EventData {
    /// 256 KiB, the per-event body limit of DESIGN.md §3.7.
    pub const MAX_BYTES: usize = 256 * 1024;
    /// The longest `call_id`: it is indexed and filtered on, and no call id needs more.
    pub const MAX_CALL_ID: usize = 256;

    pub fn parse(value: Value) -> Result<Self, DataError> {
        let Value::Object(map) = value else {
            return Err(DataError::NotAnObject);
        };
        match map.get("call_id") {
            Some(Value::String(id)) if id.len() > Self::MAX_CALL_ID => return Err(DataError::CallIdTooLong),
            Some(Value::String(id)) if !id.is_empty() => {}
            _ => return Err(DataError::MissingCallId),
        }
        let data = Self(map);
        let size = data.serialized_len();
        if size > Self::MAX_BYTES {
            return Err(DataError::TooLarge { size, limit: Self::MAX_BYTES });
        }
        if data.0.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)) {
            return Err(DataError::NulCharacter);
        }
        Ok(data)
    }

    /// The data of an event as stored: a call event's as [`EventData::parse`] checks it, an operational event's
    /// (which Courier wrote, about no call) as any object.
    pub fn parse_as(event_type: EventType, value: Value) -> Result<Self, DataError> {
        if !event_type.is_operational() {
            return Self::parse(value);
        }
        match value {
            Value::Object(map) => Ok(Self(map)),
            _ => Err(DataError::NotAnObject),
        }
    }

    /// The data of an event Courier emits itself (no `call_id`, unless it is about one).
    pub fn operational(map: Map<String, Value>) -> Self {
        Self(map)
    }

    pub fn call_id(&self) -> &str {
        // A call event's data always has one (`parse`); an operational event's may not, and then it has none.
        self.0.get("call_id").and_then(Value::as_str).unwrap_or_default()
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn to_value(&self) -> Value {
        Value::Object(self.0.clone())
    }

    fn serialized_len(&self) -> usize {
        serde_json::to_vec(&self.0).map(|v| v.len()).unwrap_or(usize::MAX)
    }
}

impl<'de> Deserialize<'de> for EventData {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        EventData::parse(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// An accepted event, as stored and as it appears inside every envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Unix seconds, as the emitter gave it or the time of ingest.
    pub created: i64,
    pub tenant_id: TenantId,
    pub livemode: bool,
    pub data: EventData,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn event_types_round_trip_their_dotted_names() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
            assert_eq!(serde_json::to_value(t).expect("serialises"), json!(t.as_str()));
        }
        assert!("call.exploded".parse::<EventType>().is_err());
    }

    #[test]
    fn data_needs_an_object_with_a_string_call_id() {
        assert_eq!(EventData::parse(json!([1])), Err(DataError::NotAnObject));
        assert_eq!(EventData::parse(json!({"user_id": "u"})), Err(DataError::MissingCallId));
        assert_eq!(EventData::parse(json!({"call_id": 7})), Err(DataError::MissingCallId));
        assert_eq!(EventData::parse(json!({"call_id": ""})), Err(DataError::MissingCallId));
        assert_eq!(EventData::parse(json!({"call_id": "c".repeat(257)})), Err(DataError::CallIdTooLong));
        assert!(EventData::parse(json!({"call_id": "c".repeat(256)})).is_ok());
        assert_eq!(EventData::parse(json!({"call_id": "c", "n": [{"x": "a\u{0}b"}]})), Err(DataError::NulCharacter));
        assert_eq!(EventData::parse(json!({"call_id": "c", "k\u{0}": 1})), Err(DataError::NulCharacter));
        let data = EventData::parse(json!({"call_id": "c-1", "extra": {"kept": true}})).expect("valid");
        assert_eq!(data.call_id(), "c-1");
        assert_eq!(data.as_map()["extra"], json!({"kept": true}));
    }

    #[test]
    fn selectors_match_what_they_name() {
        let all = EventSelector::parse(["*"]).expect("valid");
        assert!(EventType::CALLS.iter().all(|t| all.matches(*t)));
        assert!(EventType::OPERATIONAL.iter().all(|t| !all.matches(*t)), "`*` never includes operational events");
        let ops = EventSelector::parse(["delivery.exhausted"]).expect("valid");
        assert!(ops.matches(EventType::DeliveryExhausted) && !ops.matches(EventType::WebhookDisabled));
        let some = EventSelector::parse(["call.failed", "call.completed", "call.failed"]).expect("valid");
        assert_eq!(some.names(), vec!["call.completed", "call.failed"]);
        assert!(some.matches(EventType::CallFailed));
        assert!(!some.matches(EventType::CallStarted));
        assert!(EventSelector::parse(["call.nope"]).is_err());
        assert!(EventSelector::parse(Vec::<&str>::new()).is_err());
    }

    #[test]
    fn data_is_size_limited() {
        let big = "x".repeat(EventData::MAX_BYTES);
        match EventData::parse(json!({"call_id": "c", "blob": big})) {
            Err(DataError::TooLarge { size, limit }) => assert!(size > limit),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
}

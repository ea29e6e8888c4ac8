//! The body of every delivery request (DESIGN.md §3.4).

use serde::Serialize;
use serde::ser::SerializeMap;

use crate::event::{Event, EventData, EventType};
use crate::id::{DeliveryId, EventId, TenantId};

/// What a webhook chose to receive of an event's `data`.
/// Transcripts and metrics are personal data, so both default to excluded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PayloadFilter {
    #[serde(default)]
    pub include_transcript: bool,
    #[serde(default)]
    pub include_metrics: bool,
}

impl PayloadFilter {
    fn keeps(&self, key: &str) -> bool {
        match key {
            "transcript" => self.include_transcript,
            "metrics" => self.include_metrics,
            _ => true,
        }
    }
}

/// One delivery attempt's body, borrowing the stored event so rendering copies nothing it does not write.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub event: &'a Event,
    pub filter: PayloadFilter,
    pub delivery_id: &'a DeliveryId,
    pub attempt: u32,
    pub max_attempts: u32,
}

impl Envelope<'_> {
    /// The exact bytes that are signed and sent.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain maps, strings and numbers into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[derive(Serialize)]
struct EnvelopeEvent<'a> {
    id: &'a EventId,
    #[serde(rename = "type")]
    event_type: EventType,
    created: i64,
    tenant_id: TenantId,
    livemode: bool,
    data: FilteredData<'a>,
}

struct FilteredData<'a> {
    data: &'a EventData,
    filter: PayloadFilter,
}

impl Serialize for FilteredData<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.data.as_map() {
            if self.filter.keeps(k) {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

impl Serialize for Envelope<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let event = EnvelopeEvent {
            id: &self.event.id,
            event_type: self.event.event_type,
            created: self.event.created,
            tenant_id: self.event.tenant_id,
            livemode: self.event.livemode,
            data: FilteredData { data: &self.event.data, filter: self.filter },
        };
        let mut map = s.serialize_map(Some(4))?;
        map.serialize_entry("event", &event)?;
        map.serialize_entry("delivery_id", self.delivery_id)?;
        map.serialize_entry("attempt", &self.attempt)?;
        map.serialize_entry("max_attempts", &self.max_attempts)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn event() -> Event {
        Event {
            id: EventId::parse("evt_abc123").expect("valid"),
            event_type: EventType::CallCompleted,
            created: 1_705_680_000,
            tenant_id: TenantId::generate(),
            livemode: true,
            data: EventData::parse(json!({
                "call_id": "call-uuid",
                "status": "completed",
                "transcript": [{"role": "assistant", "content": "Hello!"}],
                "metrics": {"duration_seconds": 180}
            }))
            .expect("valid"),
        }
    }

    fn render(filter: PayloadFilter) -> Value {
        let event = event();
        let delivery_id = DeliveryId::generate();
        let bytes =
            Envelope { event: &event, filter, delivery_id: &delivery_id, attempt: 2, max_attempts: 5 }.to_bytes();
        let v: Value = serde_json::from_slice(&bytes).expect("valid JSON");
        assert_eq!(v["delivery_id"], json!(delivery_id.as_str()));
        v
    }

    #[test]
    fn envelope_has_the_guides_shape() {
        let v = render(PayloadFilter { include_transcript: true, include_metrics: true });
        assert_eq!(v["event"]["id"], "evt_abc123");
        assert_eq!(v["event"]["type"], "call.completed");
        assert_eq!(v["event"]["created"], 1_705_680_000);
        assert_eq!(v["event"]["livemode"], true);
        assert_eq!(v["event"]["data"]["call_id"], "call-uuid");
        assert_eq!(v["event"]["data"]["metrics"]["duration_seconds"], 180);
        assert!(v["event"]["data"]["transcript"].is_array());
        assert_eq!(v["attempt"], 2);
        assert_eq!(v["max_attempts"], 5);
    }

    #[test]
    fn transcript_and_metrics_are_dropped_unless_asked_for() {
        let v = render(PayloadFilter::default());
        assert!(v["event"]["data"].get("transcript").is_none());
        assert!(v["event"]["data"].get("metrics").is_none());
        assert_eq!(v["event"]["data"]["status"], "completed");

        let v = render(PayloadFilter { include_transcript: false, include_metrics: true });
        assert!(v["event"]["data"].get("transcript").is_none());
        assert!(v["event"]["data"].get("metrics").is_some());
    }
}

//! An example of each call lifecycle event, shaped like the integration guide's payload: what the portal's event
//! catalog shows and what a portal "send test event" delivers.

use serde_json::{Map, Value, json};

use crate::event::EventType;

/// When each call event is emitted and what receivers use it for (the integration guide's table).
pub fn describe(t: EventType) -> (&'static str, &'static str) {
    match t {
        EventType::CallStarted => ("Call initiated", "Track call volume"),
        EventType::CallConnected => ("Agent connected", "Monitor connection success"),
        EventType::CallCompleted => ("Normal completion", "Billing, analytics, audit"),
        EventType::CallFailed => ("Connection failed", "Alerting, retry logic"),
        EventType::CallDisconnected => ("Unexpected drop", "Quality monitoring"),
        EventType::CallAgentChanged => ("Agent handoff", "Workflow analytics"),
        EventType::WebhookDisabled => ("Courier disabled one of your webhooks", "Operations alerting"),
        EventType::DeliveryExhausted => ("A delivery used up its attempts", "Operations alerting"),
    }
}

/// An example `data` object for `t` about `call_id`.
pub fn data(t: EventType, call_id: &str) -> Map<String, Value> {
    let mut data = json!({
        "call_id": call_id,
        "room_name": "room-abc",
        "workflow_slug": "onboarding",
        "user_id": "user-123",
    });
    let extra = match t {
        EventType::CallStarted => json!({"status": "started"}),
        EventType::CallConnected => json!({"status": "connected", "agent": "greeter"}),
        EventType::CallCompleted => json!({
            "status": "completed",
            "duration_seconds": 180,
            "agent_history": ["greeter", "support"],
            "transcript": [
                {"role": "assistant", "content": "Hello!", "agent": "greeter"},
                {"role": "user", "content": "Hi there"}
            ],
            "metrics": {"duration_seconds": 180, "agent_count": 2, "message_count": 15},
            "metadata": {"source": "kafka"}
        }),
        EventType::CallFailed => json!({"status": "failed", "status_reason": "sip_timeout"}),
        EventType::CallDisconnected => json!({"status": "disconnected", "duration_seconds": 42}),
        EventType::CallAgentChanged => json!({"from_agent": "greeter", "to_agent": "support"}),
        EventType::WebhookDisabled | EventType::DeliveryExhausted => json!({}),
    };
    if let (Value::Object(base), Value::Object(extra)) = (&mut data, extra) {
        base.extend(extra);
    }
    match data {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventData;

    #[test]
    fn every_call_sample_is_valid_event_data_for_its_type() {
        for t in EventType::CALLS {
            let data = data(t, "call-1");
            let parsed = EventData::parse_as(t, Value::Object(data)).expect("a sample is valid data");
            assert_eq!(parsed.call_id(), "call-1");
        }
    }
}

//! A W3C `traceparent` (https://www.w3.org/TR/trace-context/#traceparent-header), version `00`.
//!
//! Courier stores the ingest request's trace context with each delivery it creates, so the delivery attempt that runs
//! later, in another process perhaps, can link back to it. Only a valid context is representable: ids are not all
//! zero, the text is exactly `00-<32 hex>-<16 hex>-<2 hex>`.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a W3C traceparent (00-<32 hex trace id>-<16 hex span id>-<2 hex flags>)")]
pub struct TraceParentError;

impl TraceParent {
    /// `None` when either id is all zeros, which W3C defines as invalid.
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> Option<Self> {
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(Self { trace_id, span_id, flags })
    }

    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    pub fn span_id(&self) -> [u8; 8] {
        self.span_id
    }

    /// The trace flags; bit 0 is "sampled".
    pub fn flags(&self) -> u8 {
        self.flags
    }
}

fn hex_into(text: &str, out: &mut [u8]) -> Result<(), TraceParentError> {
    // Lower case only, as the specification requires.
    if text.len() != out.len() * 2 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(TraceParentError);
    }
    hex::decode_to_slice(text, out).map_err(|_| TraceParentError)
}

impl FromStr for TraceParent {
    type Err = TraceParentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.trim().split('-');
        let (Some("00"), Some(trace), Some(span), Some(flags), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TraceParentError);
        };
        let (mut trace_id, mut span_id, mut flag) = ([0u8; 16], [0u8; 8], [0u8; 1]);
        hex_into(trace, &mut trace_id)?;
        hex_into(span, &mut span_id)?;
        hex_into(flags, &mut flag)?;
        Self::new(trace_id, span_id, flag[0]).ok_or(TraceParentError)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{:02x}", hex::encode(self.trace_id), hex::encode(self.span_id), self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specification_example_round_trips() {
        let parsed: TraceParent = EXAMPLE.parse().unwrap();
        assert_eq!(hex::encode(parsed.trace_id()), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(parsed.span_id()), "00f067aa0ba902b7");
        assert_eq!(parsed.flags(), 1);
        assert_eq!(parsed.to_string(), EXAMPLE);
        assert_eq!(TraceParent::new(parsed.trace_id(), parsed.span_id(), parsed.flags()), Some(parsed));
        assert_eq!(TraceParent::new([0; 16], parsed.span_id(), 1), None, "an all-zero id is no context");
    }

    #[test]
    fn invalid_contexts_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
        ] {
            assert_eq!(bad.parse::<TraceParent>(), Err(TraceParentError), "{bad}");
        }
    }
}

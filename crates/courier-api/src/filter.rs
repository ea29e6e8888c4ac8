//! A delivery filter as a request spells it (the API's query parameters and bulk-replay body, the portal's log
//! and recover forms), parsed once: each field's rule and message live here, and each face only says how a
//! refusal is shown (a 422 naming the field, or a page saying what to fix).

use chrono::{DateTime, NaiveDateTime, Utc};
use courier_core::{EventType, WebhookId};
use courier_scheduler::DeliveryStatus;
use courier_scheduler::logs::DeliveryFilter;

/// The text of each field, as given (absent, or empty once trimmed, means not given).
#[derive(Debug, Default)]
pub struct FilterText<'a> {
    pub status: Option<&'a str>,
    pub webhook_id: Option<&'a str>,
    /// Each with the name of the field it came from (`event_type`, `event_types[2]`).
    pub event_types: Vec<(String, &'a str)>,
    pub call_id: Option<&'a str>,
    pub since: Option<&'a str>,
    pub until: Option<&'a str>,
    pub from: Face,
}

/// Who sent the filter, which decides two things a form does differently from an API client.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    /// Every value given is a value (an empty `status` is an unknown status); times are RFC 3339.
    #[default]
    Api,
    /// A form: a field left blank is not given, and the date picker's `2026-01-19T12:00` is read as UTC.
    Portal,
}

/// The first field that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

fn invalid(field: &str, message: impl Into<String>) -> Invalid {
    Invalid { field: field.to_owned(), message: message.into() }
}

/// A field's text when it counts as given.
pub(crate) fn given(from: Face, text: Option<&str>) -> Option<&str> {
    match from {
        Face::Api => text,
        Face::Portal => text.map(str::trim).filter(|s| !s.is_empty()),
    }
}

impl FilterText<'_> {
    pub fn parse(&self) -> Result<DeliveryFilter, Invalid> {
        let given = |text| given(self.from, text);
        let status = given(self.status)
            .map(|s| s.parse::<DeliveryStatus>().map_err(|e| invalid("status", e.to_string())))
            .transpose()?;
        let webhook_id = given(self.webhook_id)
            .map(|t| WebhookId::parse(t).map_err(|e| invalid("webhook_id", e.to_string())))
            .transpose()?;
        let event_types = self
            .event_types
            .iter()
            .filter_map(|(field, text)| given(Some(text)).map(|t| (field, t)))
            .map(|(field, t)| t.parse::<EventType>().map_err(|e| invalid(field, e.to_string())))
            .collect::<Result<_, _>>()?;
        let call_id = given(self.call_id).map(check_call_id).transpose()?;
        let since = self.time("since", given(self.since))?;
        let until = self.time("until", given(self.until))?;
        Ok(DeliveryFilter { status, webhook_id, event_types, call_id, since, until })
    }

    fn time(&self, field: &str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, Invalid> {
        let Some(text) = text else { return Ok(None) };
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Ok(Some(t.with_timezone(&Utc)));
        }
        let local = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
            .filter(|_| self.from == Face::Portal);
        match local {
            Some(t) => Ok(Some(t.and_utc())),
            None if self.from == Face::Portal => {
                Err(invalid(field, "not a time; use the date picker or 2026-01-19T12:00"))
            }
            None => Err(invalid(field, "must be an RFC 3339 time, e.g. 2026-01-19T12:00:00Z")),
        }
    }
}

/// A `call_id` filter that could match something: at most as long as a stored one, and without NUL (which a
/// `text` parameter cannot hold; PostgreSQL would refuse the query).
fn check_call_id(text: &str) -> Result<String, Invalid> {
    if text.len() > courier_core::EventData::MAX_CALL_ID {
        return Err(invalid("call_id", "must be at most 256 bytes"));
    }
    if text.contains('\0') {
        return Err(invalid("call_id", "must not contain NUL characters"));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_field_is_checked_and_a_blank_form_field_means_not_given() {
        let text = FilterText { status: Some(" "), since: Some(""), from: Face::Portal, ..FilterText::default() };
        assert_eq!(text.parse().expect("blank is absent").status, None);
        let api = FilterText { status: Some(""), ..FilterText::default() };
        assert_eq!(api.parse().expect_err("an empty status is no status").field, "status");
        let bad = FilterText { event_types: vec![("event_types[1]".into(), "call.nope")], ..FilterText::default() };
        assert_eq!(bad.parse().expect_err("unknown type").field, "event_types[1]");
        let nul = FilterText { call_id: Some("a\0b"), ..FilterText::default() };
        assert_eq!(nul.parse().expect_err("NUL").field, "call_id");
        let picker = FilterText { since: Some("2026-01-19T12:00"), ..FilterText::default() };
        assert_eq!(picker.parse().expect_err("the API takes RFC 3339 only").field, "since");
        let portal = FilterText { from: Face::Portal, ..picker };
        assert!(portal.parse().expect("the portal takes the picker's format").since.is_some());
    }
}

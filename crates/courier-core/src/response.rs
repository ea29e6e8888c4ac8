//! What a receiver said, kept safely whatever bytes it sent.
//!
//! A receiver answers with any bytes: a gzip page, a UTF-16 error page, a NUL on purpose. The attempt log keeps the
//! first [`ResponseBody::MAX_BYTES`] of them exactly (PostgreSQL `bytea`), and shows them to the tenant as text when
//! they are text and lossily, marked binary, when they are not. Nothing a receiver sends can make a row unstorable.

/// The first bytes of a receiver's answer, as they arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseBody {
    bytes: Vec<u8>,
    truncated: bool,
}

impl ResponseBody {
    /// The most of an answer kept on record.
    pub const MAX_BYTES: usize = 4096;

    /// Keeps at most [`Self::MAX_BYTES`] of `bytes`; `more` says the receiver sent more than `bytes` holds.
    pub fn capture(mut bytes: Vec<u8>, more: bool) -> Self {
        let truncated = more || bytes.len() > Self::MAX_BYTES;
        bytes.truncate(Self::MAX_BYTES);
        Self { bytes, truncated }
    }

    /// As read back from the log.
    pub fn stored(bytes: Vec<u8>, truncated: bool) -> Self {
        Self::capture(bytes, truncated)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// True when the receiver sent more than was kept.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// True unless the bytes are UTF-8 text: valid UTF-8 (a character cut by truncation at the very end is still
    /// text) with no control characters but tab, line feed and carriage return.
    pub fn is_binary(&self) -> bool {
        let text = match std::str::from_utf8(&self.bytes) {
            Ok(text) => text,
            // Only a sequence cut short by the end of the kept bytes is forgiven.
            Err(err) if err.error_len().is_none() && self.truncated => {
                // valid_up_to() is a char boundary by definition.
                std::str::from_utf8(&self.bytes[..err.valid_up_to()]).unwrap_or_default()
            }
            Err(_) => return true,
        };
        text.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    }

    /// The body as text for people: invalid UTF-8 and control characters other than tab and line breaks become
    /// U+FFFD, so the result is safe in JSON, a terminal and a `text` column.
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.bytes)
            .chars()
            .map(|c| if c.is_control() && !matches!(c, '\t' | '\n' | '\r') { '\u{FFFD}' } else { c })
            .collect()
    }
}

/// A message for the log built from text a receiver influenced (an error chain may quote its bytes): control
/// characters become U+FFFD (a NUL cannot reach a `text` column) and it is cut to `max_bytes` on a char boundary.
pub fn safe_message(message: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(message.len().min(max_bytes));
    for c in message.chars() {
        let c = if c.is_control() { '\u{FFFD}' } else { c };
        if out.len() + c.len_utf8() > max_bytes {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stays_text() {
        let body = ResponseBody::capture(b"{\"ok\":true}\r\n\tdone".to_vec(), false);
        assert!(!body.is_binary());
        assert_eq!(body.display(), "{\"ok\":true}\r\n\tdone");
        assert!(!body.truncated());
    }

    #[test]
    fn nul_and_invalid_utf8_are_binary_and_displayed_safely() {
        let nul = ResponseBody::capture(b"{\"x\":\"\0\"}".to_vec(), false);
        assert!(nul.is_binary());
        assert_eq!(nul.display(), "{\"x\":\"\u{FFFD}\"}");
        assert_eq!(nul.as_bytes(), b"{\"x\":\"\0\"}");

        let latin1 = ResponseBody::capture(vec![b'c', b'a', b'f', 0xE9], false);
        assert!(latin1.is_binary());
        assert_eq!(latin1.display(), "caf\u{FFFD}");
        assert!(!latin1.display().contains('\0'));
    }

    #[test]
    fn keeps_at_most_max_bytes_and_says_so() {
        let body = ResponseBody::capture(vec![b'a'; 10_000], false);
        assert_eq!(body.as_bytes().len(), ResponseBody::MAX_BYTES);
        assert!(body.truncated());
        assert!(!body.is_binary());
    }

    #[test]
    fn a_character_cut_by_truncation_is_still_text() {
        let mut bytes = vec![b'a'; ResponseBody::MAX_BYTES - 1];
        bytes.extend_from_slice("é".as_bytes());
        let body = ResponseBody::capture(bytes, false);
        assert!(body.truncated());
        assert!(!body.is_binary(), "only the cut character is invalid");
        // The same cut sequence in an untruncated body is not forgiven.
        assert!(ResponseBody::capture(vec![b'a', 0xC3], false).is_binary());
    }

    #[test]
    fn safe_message_drops_controls_and_bounds_length() {
        assert_eq!(safe_message("bad\0byte\x1b[31m", 100), "bad\u{FFFD}byte\u{FFFD}[31m");
        let long = "é".repeat(100);
        let cut = safe_message(&long, 11);
        assert_eq!(cut, "é".repeat(5));
    }
}

//! Custom request headers a webhook may carry beside our signature (an API gateway's own credential, say).
//!
//! A receiver's gateway must still see our framing and our signature intact, so the names we set, the framing
//! headers and the hop-by-hop headers are refused, each with a message naming it.

/// At most this many custom headers per webhook.
pub const MAX_HEADERS: usize = 10;
/// The longest header name.
pub const MAX_NAME: usize = 64;
/// The longest header value, in bytes.
pub const MAX_VALUE: usize = 1024;
/// What a name is, as an ECMA-262 pattern (for the OpenAPI document): an HTTP token of at most [`MAX_NAME`].
pub const NAME_PATTERN: &str = "^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$";
/// What a value is, as an ECMA-262 pattern: visible ASCII, spaces and tabs.
pub const VALUE_PATTERN: &str = "^[\\t -~]*$";

/// The reserved names as one ECMA-262 pattern that matches any of them in any case (JSON Schema patterns have no
/// case-insensitive flag, so each letter is a class: `[Hh][Oo][Ss][Tt]`).
pub fn reserved_pattern() -> String {
    let any_case = |name: &str| -> String {
        name.chars()
            .map(|c| if c.is_ascii_alphabetic() { format!("[{}{}]", c.to_ascii_uppercase(), c) } else { c.to_string() })
            .collect()
    };
    format!("^({})$", RESERVED.iter().map(|n| any_case(n)).collect::<Vec<_>>().join("|"))
}

/// Names a webhook may not set (compared in lower case): ours, HTTP framing, and hop-by-hop headers.
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "user-agent",
    "x-webhook-signature",
    "x-webhook-event",
    "x-webhook-delivery",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// Why a custom header is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("at most {MAX_HEADERS} headers")]
    TooMany,
    #[error("a header name is 1 to {MAX_NAME} letters, digits and !#$%&'*+-.^_`|~")]
    BadName,
    #[error("`{0}` is set by Courier or by HTTP itself and cannot be overridden")]
    Reserved(String),
    #[error("`{0}` appears twice (names are case-insensitive)")]
    Duplicate(String),
    #[error("a header value is at most {MAX_VALUE} bytes of visible ASCII, spaces and tabs")]
    BadValue,
}

/// A webhook's custom headers, each name valid and allowed, in the order given.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CustomHeaders(Vec<(String, String)>);

impl std::fmt::Debug for CustomHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values are credentials: only names are ever shown.
        f.debug_list().entries(self.0.iter().map(|(name, _)| name)).finish()
    }
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Checks one header; the error says what is wrong with it (the caller names it).
pub fn check(name: &str, value: &str) -> Result<(), HeaderError> {
    if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(is_token_char) {
        return Err(HeaderError::BadName);
    }
    if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(HeaderError::Reserved(name.to_owned()));
    }
    if value.len() > MAX_VALUE || !value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
        return Err(HeaderError::BadValue);
    }
    Ok(())
}

impl CustomHeaders {
    /// Validates every pair; the first problem wins, with the name it concerns.
    pub fn new(pairs: Vec<(String, String)>) -> Result<Self, (String, HeaderError)> {
        if pairs.len() > MAX_HEADERS {
            return Err((String::new(), HeaderError::TooMany));
        }
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in &pairs {
            check(name, value).map_err(|e| (name.clone(), e))?;
            let lower = name.to_ascii_lowercase();
            if seen.contains(&lower) {
                return Err((name.clone(), HeaderError::Duplicate(name.clone())));
            }
            seen.push(lower);
        }
        Ok(Self(pairs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_str()).collect()
    }

    /// The pairs, values included: for sealing and for sending only.
    pub fn expose(&self) -> &[(String, String)] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn refuses_ours_framing_hop_by_hop_bad_names_values_and_too_many() {
        assert!(CustomHeaders::new(pairs(&[("X-Api-Key", "k-123"), ("X-Tenant", "acme")])).is_ok());
        for reserved in [
            "Host",
            "content-length",
            "Content-Type",
            "Transfer-Encoding",
            "Connection",
            "User-Agent",
            "X-Webhook-Signature",
            "webhook-signature",
            "Upgrade",
            "TE",
            "Proxy-Authorization",
        ] {
            assert_eq!(
                CustomHeaders::new(pairs(&[(reserved, "x")])),
                Err((reserved.to_owned(), HeaderError::Reserved(reserved.to_owned()))),
            );
        }
        assert_eq!(CustomHeaders::new(pairs(&[("X Bad", "x")])).unwrap_err().1, HeaderError::BadName);
        assert_eq!(CustomHeaders::new(pairs(&[("", "x")])).unwrap_err().1, HeaderError::BadName);
        assert_eq!(CustomHeaders::new(pairs(&[("X-A", "line\r\nInjected: 1")])).unwrap_err().1, HeaderError::BadValue);
        assert_eq!(CustomHeaders::new(pairs(&[("X-A", "nul\0")])).unwrap_err().1, HeaderError::BadValue);
        assert!(matches!(
            CustomHeaders::new(pairs(&[("X-A", "1"), ("x-a", "2")])),
            Err((_, HeaderError::Duplicate(_)))
        ));
        let eleven: Vec<(String, String)> = (0..11).map(|i| (format!("X-H{i}"), "v".to_owned())).collect();
        assert_eq!(CustomHeaders::new(eleven).unwrap_err().1, HeaderError::TooMany);
    }

    #[test]
    fn debug_shows_names_only() {
        let headers = CustomHeaders::new(pairs(&[("X-Api-Key", "secret-value")])).expect("valid");
        let shown = format!("{headers:?}");
        assert!(shown.contains("X-Api-Key") && !shown.contains("secret-value"), "{shown}");
    }
}

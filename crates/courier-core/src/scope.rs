//! API key scopes (DESIGN.md §3.1).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Every scope name a key may carry.
///
/// `calls:*` and `workflows:read` come from the integration guide: they are valid names but grant nothing in Courier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "webhooks:read")]
    WebhooksRead,
    #[serde(rename = "webhooks:write")]
    WebhooksWrite,
    #[serde(rename = "deliveries:read")]
    DeliveriesRead,
    #[serde(rename = "deliveries:replay")]
    DeliveriesReplay,
    #[serde(rename = "events:write")]
    EventsWrite,
    #[serde(rename = "calls:initiate")]
    CallsInitiate,
    #[serde(rename = "calls:read")]
    CallsRead,
    #[serde(rename = "workflows:read")]
    WorkflowsRead,
}

impl Scope {
    pub const ALL: [Scope; 8] = [
        Scope::WebhooksRead,
        Scope::WebhooksWrite,
        Scope::DeliveriesRead,
        Scope::DeliveriesReplay,
        Scope::EventsWrite,
        Scope::CallsInitiate,
        Scope::CallsRead,
        Scope::WorkflowsRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::WebhooksRead => "webhooks:read",
            Scope::WebhooksWrite => "webhooks:write",
            Scope::DeliveriesRead => "deliveries:read",
            Scope::DeliveriesReplay => "deliveries:replay",
            Scope::EventsWrite => "events:write",
            Scope::CallsInitiate => "calls:initiate",
            Scope::CallsRead => "calls:read",
            Scope::WorkflowsRead => "workflows:read",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope `{0}`")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s).ok_or_else(|| UnknownScope(s.to_owned()))
    }
}

/// A key's set of scopes, sorted and without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Self {
        let mut v: Vec<Scope> = scopes.into_iter().collect();
        v.sort();
        v.dedup();
        Self(v)
    }

    /// Parses a comma-separated list such as `webhooks:read,events:write`.
    pub fn parse_list(s: &str) -> Result<Self, UnknownScope> {
        s.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(Scope::from_str)
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|s| s.as_str()).collect()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_name_and_rejects_unknown_ones() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
        }
        assert_eq!("webhooks:delete".parse::<Scope>(), Err(UnknownScope("webhooks:delete".into())));
    }

    #[test]
    fn lists_are_sorted_and_deduplicated() {
        let scopes = Scopes::parse_list("events:write, webhooks:read,events:write").expect("valid");
        assert_eq!(scopes.names(), vec!["webhooks:read", "events:write"]);
        assert!(scopes.contains(Scope::EventsWrite));
        assert!(!scopes.contains(Scope::DeliveriesRead));
        assert!(Scopes::parse_list("events:write,bogus").is_err());
    }
}

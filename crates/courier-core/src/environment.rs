//! Live and test environments: a key, its webhooks and its events all belong to one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Live,
    Test,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }

    /// The envelope's `livemode` flag.
    pub fn is_live(self) -> bool {
        self == Environment::Live
    }

    /// The prefix of this environment's API keys: `as_live_` or `as_test_`.
    pub fn key_prefix(self) -> &'static str {
        match self {
            Environment::Live => "as_live_",
            Environment::Test => "as_test_",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown environment `{0}`: expected `live` or `test`")]
pub struct UnknownEnvironment(pub String);

impl FromStr for Environment {
    type Err = UnknownEnvironment;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "live" => Ok(Environment::Live),
            "test" => Ok(Environment::Test),
            other => Err(UnknownEnvironment(other.to_owned())),
        }
    }
}

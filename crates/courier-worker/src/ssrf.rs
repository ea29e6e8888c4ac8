//! The SSRF guard at connect time: reqwest's resolver, vetting every address DNS returns.
//!
//! The client connects only to the addresses this resolver let through, so a name that resolves differently on a
//! second lookup (DNS rebinding) gains nothing. The address rules themselves are `courier_core::target`.

use std::net::SocketAddr;
use std::sync::Arc;

pub use courier_core::target::{TargetPolicy, is_forbidden};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The error a resolution fails with when every address was forbidden.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to addresses that are not allowed as webhook targets")]
pub struct BlockedTarget {
    pub host: String,
}

/// The error a resolution fails with when DNS itself failed (no such name, no answer): the attempt is `dns`.
#[derive(Debug, thiserror::Error)]
#[error("looking up {host} failed")]
pub struct LookupFailed {
    pub host: String,
    #[source]
    pub source: std::io::Error,
}

/// reqwest's resolver, vetting every address DNS returns.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub policy: Arc<TargetPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let looked_up = tokio::net::lookup_host((host.as_str(), 0)).await.map(|found| found.collect::<Vec<_>>());
            let found: Vec<SocketAddr> = match looked_up {
                Ok(found) => found,
                Err(source) => {
                    return Err(Box::new(LookupFailed { host, source }) as Box<dyn std::error::Error + Send + Sync>);
                }
            };
            let vetted: Vec<SocketAddr> = found.into_iter().filter(|a| policy.permits(a.ip())).collect();
            if vetted.is_empty() {
                return Err(Box::new(BlockedTarget { host }) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(vetted.into_iter()) as Addrs)
        })
    }
}

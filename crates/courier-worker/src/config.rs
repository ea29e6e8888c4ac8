//! How one worker process delivers: its timeouts, concurrency shares, lease and housekeeping.

use std::time::Duration;

use courier_core::RetryPolicy;
use ipnet::IpNet;

use crate::holdings::Shares;

/// How one worker process delivers.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub retry: RetryPolicy,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub allowed_targets: Vec<IpNet>,
    /// Deliveries in flight in this process.
    pub concurrency: usize,
    /// Deliveries in flight to one webhook in this process, so one slow endpoint cannot take every slot.
    pub per_webhook: usize,
    /// Deliveries one tenant may hold in this process, so a tenant with several slow endpoints cannot take every
    /// slot either. [`WorkerConfig::default_per_tenant`] leaves one webhook's cap for everyone else.
    pub per_tenant: usize,
    /// How often an idle worker looks for due work when no notification came (retries become due silently).
    pub poll_interval: Duration,
    /// How long in-flight attempts may run on after shutdown is asked for before they are released.
    pub shutdown_grace: Duration,
    /// Disable a webhook whose deliveries have all failed for good for this long, once at least `min_failures`
    /// have; `None` never does.
    pub auto_disable: Option<AutoDisable>,
    /// How long a claim holds a delivery before any worker may claim it again.
    /// At least twice the request timeout, so a live worker never loses a lease mid-request.
    pub lease: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct AutoDisable {
    pub after: Duration,
    pub min_failures: u32,
}

impl WorkerConfig {
    /// The lease the design asks for: twice the whole request timeout plus slack.
    pub fn default_lease(timeout: Duration) -> Duration {
        timeout * 2 + Duration::from_secs(5)
    }

    /// The default tenant share: all of the process but one webhook's cap, which another tenant can always use.
    pub fn default_per_tenant(concurrency: usize, per_webhook: usize) -> usize {
        concurrency.saturating_sub(per_webhook).max(per_webhook).max(1)
    }

    pub(crate) fn lease(&self) -> Duration {
        self.lease.max(self.timeout * 2)
    }

    pub(crate) fn shares(&self) -> Shares {
        Shares {
            per_webhook: self.per_webhook.max(1),
            per_tenant: self.per_tenant.max(1),
            retries: (self.concurrency * RETRY_SHARE_PERCENT / 100).max(1),
        }
    }
}

/// Retries may hold at most this share of a process's slots; the rest is kept for first attempts, so a backlog of
/// failing retries never holds back fresh events.
const RETRY_SHARE_PERCENT: usize = 75;

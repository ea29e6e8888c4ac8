//! What one worker process holds, so no webhook, tenant or backlog of retries can take every slot.
//!
//! Three shares are kept, each as a count of claimed deliveries (attempting or waiting for a permit):
//! - per webhook: `per_webhook` attempts at once (a semaphore) and about as many waiting; claims skip a webhook
//!   holding twice its cap (what ingest handed over may wait past it, [`Arrival::Handed`]);
//! - per tenant: at most `per_tenant` in all, so one tenant with several hanging endpoints cannot crowd out
//!   another tenant's healthy one;
//! - retries: at most `retries` slots, so a backlog of failing retries cannot starve first attempts.
//!
//! A [`Held`] guard gives its delivery's share back when dropped, however its task ends (finished, released,
//! aborted at shutdown, panicked).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use courier_core::{TenantId, WebhookId};
use tokio::sync::Semaphore;

/// The shares of one process.
#[derive(Debug, Clone, Copy)]
pub struct Shares {
    pub per_webhook: usize,
    pub per_tenant: usize,
    pub retries: usize,
}

#[derive(Default)]
struct Counts {
    webhooks: HashMap<WebhookId, (Arc<Semaphore>, usize)>,
    tenants: HashMap<TenantId, usize>,
    retries: usize,
}

/// What a claim should leave alone right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saturated {
    pub webhooks: Vec<WebhookId>,
    pub tenants: Vec<TenantId>,
    pub retries: bool,
}

impl Saturated {
    pub fn is_empty(&self) -> bool {
        self.webhooks.is_empty() && self.tenants.is_empty() && !self.retries
    }
}

/// Shared by the claim loop and every attempt task.
/// How a delivery came to the worker, which decides the shares it is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Claimed (a retry counts toward the retries' share).
    Claimed { retry: bool },
    /// Handed over by ingest. It may wait past its webhook's share (for the webhook's permit, like any other): it is
    /// in memory already, holding one of the handover's credits, which bound how many there are; handing it back
    /// would cost a write and a release and put it behind the webhook's line in the queue, as happened to 5 % of
    /// the batch benchmark's deliveries (handed over by one commit while claims filled the webhook's share). Its
    /// tenant's share still holds.
    Handed,
}

#[derive(Clone)]
pub struct Holdings {
    shares: Shares,
    counts: Arc<Mutex<Counts>>,
}

/// One claimed delivery's place in the holdings; gives it back on drop.
pub struct Held {
    holdings: Holdings,
    webhook: WebhookId,
    tenant: TenantId,
    retry: bool,
    /// The webhook's permits: acquire one before sending.
    pub permits: Arc<Semaphore>,
}

impl Holdings {
    pub fn new(shares: Shares) -> Self {
        Self { shares, counts: Arc::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a claimed delivery in, unless that would pass a hard cap (claims stop short of the caps; a batch
    /// can overshoot by at most one claim, which the caller hands back).
    pub fn take(&self, webhook: &WebhookId, tenant: TenantId, arrival: Arrival) -> Option<Held> {
        let retry = arrival == Arrival::Claimed { retry: true };
        let webhook_share = arrival != Arrival::Handed;
        let mut counts = self.lock();
        let over_webhook =
            webhook_share && counts.webhooks.get(webhook).is_some_and(|(_, n)| *n >= self.shares.per_webhook * 2);
        let over_tenant = counts.tenants.get(&tenant).is_some_and(|n| *n >= self.shares.per_tenant);
        if over_webhook || over_tenant {
            return None;
        }
        let per_webhook = self.shares.per_webhook;
        let (permits, n) =
            counts.webhooks.entry(webhook.clone()).or_insert_with(|| (Arc::new(Semaphore::new(per_webhook)), 0));
        *n += 1;
        let permits = permits.clone();
        *counts.tenants.entry(tenant).or_insert(0) += 1;
        if retry {
            counts.retries += 1;
        }
        Some(Held { holdings: self.clone(), webhook: webhook.clone(), tenant, retry, permits })
    }

    /// Webhooks and tenants at their share, and whether retries are.
    pub fn saturated(&self) -> Saturated {
        let counts = self.lock();
        Saturated {
            webhooks: counts
                .webhooks
                .iter()
                .filter(|(_, (_, n))| *n >= self.shares.per_webhook * 2)
                .map(|(id, _)| id.clone())
                .collect(),
            tenants: counts.tenants.iter().filter(|(_, n)| **n >= self.shares.per_tenant).map(|(id, _)| *id).collect(),
            retries: counts.retries >= self.shares.retries,
        }
    }

    /// What the handover of this worker's process asks before each ingest commit: the webhooks and tenants at their
    /// share, to which ingest leases nothing (the worker would hand those deliveries back, a write and a release
    /// each for nothing).
    pub fn room(&self) -> courier_scheduler::handover::Room {
        let holdings = self.clone();
        Arc::new(move || {
            let Saturated { webhooks, tenants, .. } = holdings.saturated();
            courier_scheduler::handover::Full { webhooks, tenants }
        })
    }

    /// True once anything in `skipped` has room again, so a claim may find something new.
    pub fn eased(&self, skipped: &Saturated) -> bool {
        let counts = self.lock();
        skipped.webhooks.iter().any(|id| counts.webhooks.get(id).is_none_or(|(_, n)| *n <= self.shares.per_webhook))
            || skipped.tenants.iter().any(|id| counts.tenants.get(id).is_none_or(|n| *n < self.shares.per_tenant))
            || (skipped.retries && counts.retries < self.shares.retries)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self.holdings.lock();
        if let Some((_, n)) = counts.webhooks.get_mut(&self.webhook) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Forget idle webhooks so the map does not grow with every endpoint ever seen.
                counts.webhooks.remove(&self.webhook);
            }
        }
        if let Some(n) = counts.tenants.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.tenants.remove(&self.tenant);
            }
        }
        if self.retry {
            counts.retries = counts.retries.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLAIMED: Arrival = Arrival::Claimed { retry: false };

    fn shares() -> Shares {
        Shares { per_webhook: 2, per_tenant: 5, retries: 3 }
    }

    #[test]
    fn a_tenant_stops_at_its_share_across_webhooks() {
        let h = Holdings::new(shares());
        let tenant = TenantId::generate();
        let (a, b, c) = (WebhookId::generate(), WebhookId::generate(), WebhookId::generate());
        let mut held = Vec::new();
        for wh in [&a, &a, &a, &a, &b] {
            held.push(h.take(wh, tenant, CLAIMED).expect("under the caps"));
        }
        assert!(h.take(&a, TenantId::generate(), CLAIMED).is_none(), "webhook a holds twice its cap");
        let handed = h.take(&a, TenantId::generate(), Arrival::Handed);
        assert!(handed.is_some(), "a handed-over delivery waits past its webhook's share");
        drop(handed);
        assert!(h.take(&c, tenant, CLAIMED).is_none(), "the tenant holds its share");
        assert!(h.take(&c, tenant, Arrival::Handed).is_none(), "handed over or claimed");
        let other = h.take(&c, TenantId::generate(), CLAIMED);
        assert!(other.is_some(), "another tenant still gets in");
        let sat = h.saturated();
        assert_eq!(sat.webhooks, vec![a.clone()]);
        assert_eq!(sat.tenants, vec![tenant]);
        assert!(!h.eased(&sat));
        held.pop();
        assert!(h.eased(&sat), "the tenant has room again");
        drop(held);
        drop(other);
        assert!(h.saturated().is_empty());
        assert!(h.lock().webhooks.is_empty() && h.lock().tenants.is_empty(), "idle entries are forgotten");
    }

    #[test]
    fn retries_stop_at_their_share() {
        let h = Holdings::new(shares());
        let held: Vec<_> = (0..3)
            .map(|_| {
                h.take(&WebhookId::generate(), TenantId::generate(), Arrival::Claimed { retry: true }).expect("room")
            })
            .collect();
        assert!(h.saturated().retries);
        drop(held);
        assert!(!h.saturated().retries);
    }
}

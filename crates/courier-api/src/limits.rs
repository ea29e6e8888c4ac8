//! Rate limits of the API: one bucket per API key for what a key does, and one per client address for the keys
//! that fail, so guessing keys is slow while nobody's valid key is ever refused for someone else's guesses.
//!
//! Both are `governor` keyed limiters (GCRA, one word of state per key). A key's state is forgotten once it is
//! indistinguishable from a fresh one (`retain_recent`, run by [`RateLimiter::housekeeping`]); addresses are
//! also capped, because anyone can make new ones.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::RwLock;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use courier_core::{ApiKeyId, TenantId};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::state::RateLimit;

/// Failed authentications an address may make: a burst of 20, then 2 a second.
const FAILURES: RateLimit = RateLimit { per_second: 2.0, burst: 20.0 };
/// Addresses remembered at most. Past it, stale addresses are forgotten; should that not halve the map (a flood
/// of fresh addresses), every address starts afresh: a flood can only reset buckets, never grow memory.
const MAX_ADDRESSES: usize = 100_000;

/// Why a request was refused: the whole seconds until it may come again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

pub(crate) struct RateLimiter {
    keys: Option<DefaultKeyedRateLimiter<ApiKeyId>>,
    /// The burst of a key's bucket: a batch of more events than this empties the bucket instead of never passing.
    key_burst: NonZeroU32,
    failures: RwLock<DefaultKeyedRateLimiter<Subject>>,
    clock: DefaultClock,
}

/// What the failed-login limit counts against: an IPv4 address, or an IPv6 /64 (one host usually has a whole
/// /64, so counting single v6 addresses would give a guesser 2^64 buckets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Subject(u128);

impl From<IpAddr> for Subject {
    fn from(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(v4) => Subject(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Subject(u128::from(u32::from(v4))),
                None => Subject(u128::from(v6) & !((1u128 << 64) - 1)),
            },
        }
    }
}

fn quota(limit: RateLimit) -> (Quota, NonZeroU32) {
    let burst = NonZeroU32::new(limit.burst.clamp(1.0, f64::from(u32::MAX)) as u32).unwrap_or(NonZeroU32::MIN);
    // One token every 1/rate seconds (at least a nanosecond, so an absurd rate is just "unlimited in practice").
    let period = Duration::from_secs_f64(1.0 / limit.per_second).max(Duration::from_nanos(1));
    let quota = Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX)).allow_burst(burst);
    (quota, burst)
}

impl RateLimiter {
    pub(crate) fn new(limit: Option<RateLimit>) -> Self {
        let (keys, key_burst) = match limit.map(quota) {
            Some((quota, burst)) => (Some(DefaultKeyedRateLimiter::keyed(quota)), burst),
            None => (None, NonZeroU32::MIN),
        };
        Self { keys, key_burst, failures: RwLock::new(Self::failures()), clock: DefaultClock::default() }
    }

    fn failures() -> DefaultKeyedRateLimiter<Subject> {
        DefaultKeyedRateLimiter::keyed(quota(FAILURES).0)
    }

    /// Takes a token for a valid key, or says how long until one is available.
    pub(crate) fn check(&self, key: &ApiKeyId) -> Result<(), RetryAfter> {
        self.check_n(key, 1)
    }

    /// Takes `n` tokens (a batch counts each of its events). More than the burst can never be had at once: such a
    /// batch takes the whole burst instead.
    pub(crate) fn check_n(&self, key: &ApiKeyId, n: usize) -> Result<(), RetryAfter> {
        let Some(keys) = &self.keys else {
            return Ok(());
        };
        let n = u32::try_from(n).unwrap_or(u32::MAX).clamp(1, self.key_burst.get());
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        match keys.check_key_n(key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(self.retry_after(not_until.wait_time_from(self.clock.now()))),
            // Unreachable: `n` is at most the burst. Refusing for a second is the safe answer anyway.
            Err(_) => Err(RetryAfter(1)),
        }
    }

    /// Charges a failed authentication to the client at `addr`: `Err` once its failures used up its bucket, so
    /// the request is answered 429 instead of 401. Requests whose key is valid never come here.
    pub(crate) fn failed(&self, addr: Option<IpAddr>) -> Result<(), RetryAfter> {
        let (Some(_), Some(addr)) = (&self.keys, addr) else {
            return Ok(());
        };
        let (verdict, crowded) = {
            let failures = self.failures.read().unwrap_or_else(|e| e.into_inner());
            (failures.check_key(&Subject::from(addr)), failures.len() >= MAX_ADDRESSES)
        };
        if crowded {
            let mut failures = self.failures.write().unwrap_or_else(|e| e.into_inner());
            failures.retain_recent();
            if failures.len() > MAX_ADDRESSES / 2 {
                *failures = Self::failures();
            }
        }
        verdict.map_err(|not_until| self.retry_after(not_until.wait_time_from(self.clock.now())))
    }

    /// Forgets buckets that are full again (a key or address not seen for a burst's refill time). The API's
    /// periodic flush calls it, so memory follows the keys and addresses of the last few seconds.
    pub(crate) fn housekeeping(&self) {
        if let Some(keys) = &self.keys {
            keys.retain_recent();
            keys.shrink_to_fit();
        }
        let failures = self.failures.read().unwrap_or_else(|e| e.into_inner());
        failures.retain_recent();
        failures.shrink_to_fit();
    }

    fn retry_after(&self, wait: Duration) -> RetryAfter {
        RetryAfter(wait.as_secs_f64().ceil().max(1.0) as u64)
    }
}

/// Expensive reads (delivery log pages, replay counts: the API's and the portal's), limited per tenant: at most
/// [`ExpensiveReads::AT_ONCE`] at a time and [`ExpensiveReads::RATE`] a second. One tenant hammering its log then
/// holds a few of the API pool's connections, never all of them, and waits its turn with a 429.
pub(crate) struct ExpensiveReads {
    held: Arc<Mutex<HashMap<TenantId, usize>>>,
    /// Off with the API's rate limits (`COURIER_RATE_LIMIT=0`); the limit at once always holds.
    rate: Option<DefaultKeyedRateLimiter<TenantId>>,
    clock: DefaultClock,
}

/// One expensive read in progress; its turn is given back on drop.
pub(crate) struct ReadTurn {
    held: Arc<Mutex<HashMap<TenantId, usize>>>,
    tenant: TenantId,
}

impl Drop for ReadTurn {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.tenant);
            }
        }
    }
}

impl ExpensiveReads {
    /// Expensive reads one tenant may run at once.
    pub(crate) const AT_ONCE: usize = 4;
    /// …and start per second, with a burst of twice that.
    pub(crate) const RATE: RateLimit = RateLimit { per_second: 20.0, burst: 40.0 };

    pub(crate) fn new(limits: Option<RateLimit>) -> Self {
        Self {
            held: Arc::default(),
            rate: limits.map(|_| DefaultKeyedRateLimiter::keyed(quota(Self::RATE).0)),
            clock: DefaultClock::default(),
        }
    }

    /// A turn for `tenant`, or how long to wait: it already runs [`Self::AT_ONCE`] or used up its rate.
    pub(crate) fn begin(&self, tenant: TenantId) -> Result<ReadTurn, RetryAfter> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mine = held.get(&tenant).copied().unwrap_or(0);
        if mine >= Self::AT_ONCE {
            return Err(RetryAfter(1));
        }
        if let Some(rate) = &self.rate {
            rate.check_key(&tenant).map_err(|not_until| {
                RetryAfter(not_until.wait_time_from(self.clock.now()).as_secs_f64().ceil().max(1.0) as u64)
            })?;
        }
        *held.entry(tenant).or_default() += 1;
        Ok(ReadTurn { held: self.held.clone(), tenant })
    }

    /// Forgets tenants whose rate bucket is full again.
    pub(crate) fn housekeeping(&self) {
        if let Some(rate) = &self.rate {
            rate.retain_recent();
            rate.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ApiKeyId {
        ApiKeyId::generate()
    }

    #[test]
    fn failures_are_counted_per_address_and_never_against_a_key() {
        let limiter = RateLimiter::new(Some(RateLimit { per_second: 100.0, burst: 100.0 }));
        let guesser: IpAddr = "198.51.100.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let other: IpAddr = "198.51.100.8".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let spent = (0..40).filter(|_| limiter.failed(Some(guesser)).is_err()).count();
        assert_eq!(spent, 20, "a burst of 20 failures, then refused");
        assert!(limiter.failed(Some(other)).is_ok(), "another address has its own bucket");
        assert!(limiter.check(&key()).is_ok(), "a valid key is not charged for anyone's failures");
    }

    #[test]
    fn an_ipv6_host_is_one_subject_per_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert_eq!(Subject::from(a), Subject::from(b));
        assert_ne!(Subject::from(a), Subject::from(c));
    }

    #[test]
    fn a_batch_larger_than_the_burst_takes_the_burst() {
        let limiter = RateLimiter::new(Some(RateLimit { per_second: 1.0, burst: 10.0 }));
        let k = key();
        assert!(limiter.check_n(&k, 1_000).is_ok());
        assert!(matches!(limiter.check(&k), Err(RetryAfter(1))));
    }

    #[test]
    fn expensive_reads_are_limited_per_tenant_at_once() {
        let reads = ExpensiveReads::new(None);
        let (a, b) = (TenantId::generate(), TenantId::generate());
        let turns: Vec<ReadTurn> = (0..ExpensiveReads::AT_ONCE).filter_map(|_| reads.begin(a).ok()).collect();
        assert_eq!(turns.len(), ExpensiveReads::AT_ONCE);
        assert!(reads.begin(a).is_err(), "a fifth at once is refused");
        assert!(reads.begin(b).is_ok(), "another tenant has its own turns");
        drop(turns);
        assert!(reads.begin(a).is_ok(), "turns come back when reads end");
    }

    #[test]
    fn no_limit_refuses_nothing() {
        let limiter = RateLimiter::new(None);
        let k = key();
        assert!((0..10_000).all(|_| limiter.check(&k).is_ok()));
        assert!((0..100).all(|_| limiter.failed(Some(IpAddr::from([10, 0, 0, 1]))).is_ok()));
    }
}

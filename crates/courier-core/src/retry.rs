//! The retry schedule (DESIGN.md §3.5): `delay(n) = min(initial · multiplier^(n-1), cap)` ± jitter.

use std::time::Duration;

/// A retry schedule. `Copy`, so every component holds its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub multiplier: f64,
    pub cap: Duration,
    /// Fraction of the delay added or removed at random: 0.2 is ±20 %.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { initial: Duration::from_secs(30), multiplier: 4.0, cap: Duration::from_secs(24 * 3600), jitter: 0.2 }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (1-based), before jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(1024) as i32;
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        if !secs.is_finite() || secs >= self.cap.as_secs_f64() {
            self.cap
        } else {
            Duration::from_secs_f64(secs.max(0.0))
        }
    }

    /// The delay with jitter applied, where `unit` in `[-1, 1]` picks the point inside the jitter band.
    pub fn delay_at(&self, attempt: u32, unit: f64) -> Duration {
        let factor = 1.0 + self.jitter * unit.clamp(-1.0, 1.0);
        Duration::from_secs_f64(self.base_delay(attempt).as_secs_f64() * factor.max(0.0))
    }

    /// The delay with a random point in the jitter band.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_at(attempt, rand::random_range(-1.0..=1.0))
    }

    /// The delay when the receiver asked for `Retry-After`: never earlier than the schedule, never beyond the cap.
    pub fn delay_with_hint(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let scheduled = self.delay(attempt);
        match retry_after {
            Some(hint) if hint > scheduled => hint.min(self.cap),
            _ => scheduled,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn defaults_follow_the_design() {
        let p = RetryPolicy::default();
        assert_eq!(p.base_delay(1), Duration::from_secs(30));
        assert_eq!(p.base_delay(2), Duration::from_secs(120));
        assert_eq!(p.base_delay(3), Duration::from_secs(480));
        assert_eq!(p.base_delay(100), Duration::from_secs(86_400));
        assert_eq!(p.delay_at(1, 1.0), Duration::from_secs(36));
        assert_eq!(p.delay_at(1, -1.0), Duration::from_secs(24));
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let p = RetryPolicy { jitter: 0.0, ..RetryPolicy::default() };
        assert_eq!(p.delay_with_hint(1, Some(Duration::from_secs(5))), Duration::from_secs(30));
        assert_eq!(p.delay_with_hint(1, Some(Duration::from_secs(600))), Duration::from_secs(600));
        assert_eq!(p.delay_with_hint(1, Some(Duration::from_secs(10 * 86_400))), Duration::from_secs(86_400));
    }

    fn policy() -> impl Strategy<Value = RetryPolicy> {
        (1u64..100_000, 1.0f64..10.0, 1u64..10_000_000, 0.0f64..0.5).prop_map(
            |(initial_ms, multiplier, cap_ms, jitter)| RetryPolicy {
                initial: Duration::from_millis(initial_ms),
                multiplier,
                cap: Duration::from_millis(cap_ms),
                jitter,
            },
        )
    }

    proptest! {
        #[test]
        fn base_delay_is_monotone(p in policy(), attempt in 1u32..60) {
            prop_assert!(p.base_delay(attempt) <= p.base_delay(attempt + 1));
        }

        #[test]
        fn delay_never_exceeds_cap_plus_jitter(p in policy(), attempt in 1u32..200, unit in -1.0f64..=1.0) {
            let d = p.delay_at(attempt, unit).as_secs_f64();
            prop_assert!(d <= p.cap.as_secs_f64() * (1.0 + p.jitter) + 1e-9);
        }
    }
}

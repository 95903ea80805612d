//! Exponential backoff and per-endpoint health for RPC failover (pure: time is
//! a parameter).

use std::time::Duration;

use crate::time::MonoTime;

/// Doubling delays between `initial` and `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        // The first retries come fast, so a restarted node is picked up within
        // a second; the cap bounds how long after an outage ends the gateway
        // may take to notice (10 s), while keeping a rate-limiting provider
        // at no more than one attempt per endpoint every 10 s.
        Self { initial: Duration::from_millis(250), max: Duration::from_secs(10) }
    }
}

impl Backoff {
    /// The delay after `failures` consecutive failures (the first failure waits `initial`).
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let doublings = (failures - 1).min(31);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }
}

/// Whether an endpoint may be tried now, from its recent failures.
#[derive(Clone, Debug, Default)]
pub struct EndpointHealth {
    consecutive_failures: u32,
    retry_at: Option<MonoTime>,
}

impl EndpointHealth {
    pub fn record_failure(&mut self, backoff: &Backoff, now: MonoTime) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.retry_at = Some(now + backoff.delay(self.consecutive_failures));
    }

    pub fn record_success(&mut self) {
        self.consecutive_failures = 0;
        self.retry_at = None;
    }

    pub fn is_available(&self, now: MonoTime) -> bool {
        self.retry_at.is_none_or(|at| now >= at)
    }

    pub(crate) fn retry_at(&self) -> Option<MonoTime> {
        self.retry_at
    }

    #[cfg(test)]
    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }
}

/// The order in which to try endpoints: the current one first, then the others
/// in configuration order, skipping those still backing off unless every one
/// is (then the one that becomes available first leads, so a total outage is
/// still probed).
pub fn try_order(health: &[EndpointHealth], current: usize, now: MonoTime) -> Vec<usize> {
    let count = health.len();
    let rotation: Vec<usize> = (0..count).map(|offset| (current + offset) % count.max(1)).collect();
    let available: Vec<usize> = rotation.iter().copied().filter(|&i| health[i].is_available(now)).collect();
    if !available.is_empty() {
        return available;
    }
    let mut all = rotation;
    all.sort_by_key(|&i| health[i].retry_at());
    all
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn delays_double_and_cap() {
        let backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1) };
        let delays: Vec<u64> = (0..7).map(|n| backoff.delay(n).as_millis() as u64).collect();
        assert_eq!(delays, vec![0, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn failed_endpoint_waits_then_becomes_available_and_success_resets() {
        let backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1) };
        let now = MonoTime::from_nanos(1_000_000_000);
        let mut health = EndpointHealth::default();
        assert!(health.is_available(now));
        health.record_failure(&backoff, now);
        health.record_failure(&backoff, now);
        assert!(!health.is_available(now + Duration::from_millis(199)));
        assert!(health.is_available(now + Duration::from_millis(200)));
        health.record_success();
        assert_eq!(health.consecutive_failures(), 0);
        assert!(health.is_available(now));
    }

    #[test]
    fn try_order_starts_at_current_and_skips_backing_off_endpoints() {
        let backoff = Backoff::default();
        let now = MonoTime::from_nanos(1_000_000_000);
        let mut health = vec![EndpointHealth::default(); 3];
        assert_eq!(try_order(&health, 1, now), vec![1, 2, 0]);
        health[2].record_failure(&backoff, now);
        assert_eq!(try_order(&health, 1, now), vec![1, 0]);
    }

    #[test]
    fn when_all_back_off_the_earliest_to_recover_leads() {
        let backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(10) };
        let now = MonoTime::from_nanos(1_000_000_000);
        let mut health = vec![EndpointHealth::default(); 2];
        health[0].record_failure(&backoff, now);
        health[0].record_failure(&backoff, now);
        health[1].record_failure(&backoff, now);
        assert_eq!(try_order(&health, 0, now), vec![1, 0]);
    }
}

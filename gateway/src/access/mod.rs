//! Access decisions: "is key K allowed, and why" (pure decisions over the
//! registry, memoized in a moka cache; `audit_log` and `cli` are the I/O edges).

pub mod audit;
pub mod audit_log;
pub mod cli;
pub mod decision;
pub mod staleness;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use audit::{AuditAction, AuditRecord};
pub use decision::{decide, decide_str, Decision};
pub use staleness::{StalePolicy, Staleness, StalenessWatch};

pub use crate::registry::Reason;
use crate::registry::{Outcome, Registry, WgKey};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessConfig {
    /// Safety net only: every registry change invalidates the keys it
    /// touches, so a correct caller never relies on expiry.
    pub cache_ttl: Duration,
    /// Unknown keys are cached too (a flood of handshakes from random keys
    /// must not hit the registry each time); moka evicts past this.
    pub cache_capacity: u64,
    pub staleness: Staleness,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig { cache_ttl: Duration::from_secs(60), cache_capacity: 100_000, staleness: Staleness::default() }
    }
}

/// Cached access decisions for one registry.
pub struct Access {
    cache: moka::sync::Cache<WgKey, Decision>,
    staleness: Staleness,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

impl Access {
    pub fn new(config: AccessConfig) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(config.cache_capacity)
            .time_to_live(config.cache_ttl)
            .build();
        Access { cache, staleness: config.staleness, hits: Default::default(), misses: Default::default() }
    }

    pub fn staleness(&self) -> &Staleness {
        &self.staleness
    }

    /// Changes the staleness policy; returns the audit record to log.
    pub fn set_staleness(&mut self, staleness: Staleness, last_sync: Option<u64>, now: u64) -> AuditRecord {
        self.staleness = staleness;
        audit::policy_change(&staleness, staleness.withholds(last_sync, now), last_sync, now)
    }

    /// The decision for `key` given the registry as it is now. The cache
    /// holds the registry's answer; the staleness policy is applied on every
    /// call because it depends on `now`, not on the registry.
    pub fn check(&self, registry: &Registry, key: &WgKey, now: u64) -> Decision {
        use std::sync::atomic::Ordering::Relaxed;
        let base = match self.cache.get(key) {
            Some(cached) => {
                self.hits.fetch_add(1, Relaxed);
                cached
            }
            None => {
                self.misses.fetch_add(1, Relaxed);
                let decided = decide(registry, key);
                self.cache.insert(*key, decided.clone());
                decided
            }
        };
        self.staleness.apply(base, registry.last_sync(), now)
    }

    /// Decisions answered from the cache, and computed from the registry.
    pub fn cache_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }

    /// Like [`check`](Self::check) for a key given as text.
    pub fn check_str(&self, registry: &Registry, key: &str, now: u64) -> Decision {
        match WgKey::parse(key.trim()) {
            Ok(k) => self.check(registry, &k, now),
            Err(_) => decide_str(registry, key),
        }
    }

    /// Forgets the decisions an applied event may have changed. Call after
    /// every [`Registry::apply`].
    pub fn invalidate(&self, outcome: &Outcome) {
        for k in &outcome.touched_keys {
            self.cache.invalidate(k);
        }
    }

    /// Forgets everything (a registry reloaded or replaced wholesale).
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }
}

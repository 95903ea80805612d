//! Access decisions: "is key K allowed, and why" (pure): decisions read off
//! the registry, memoized in a cache that the registry's changes invalidate,
//! with the staleness policy applied on every answer.

pub mod audit;
pub mod decision;
pub mod staleness;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use audit::{AuditAction, AuditRecord};
pub use decision::{decide, decide_str, Decision};
pub use staleness::{StalePolicy, Staleness};
pub(crate) use staleness::StalenessWatch;

pub use crate::registry::AccessReason;
use crate::registry::{Outcome, Registry, WgKey};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessConfig {
    /// Safety net only: every registry change invalidates the keys it
    /// touches, so a correct caller never relies on it. A cached answer
    /// older than this (by the `now` the caller passes) is decided afresh.
    pub cache_max_age_secs: u64,
    /// Unknown keys are cached too (a flood of handshakes from random keys
    /// must not hit the registry each time); past this many entries the
    /// oldest is dropped.
    pub cache_capacity: usize,
    pub staleness: Staleness,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig { cache_max_age_secs: 60, cache_capacity: 100_000, staleness: Staleness::default() }
    }
}

#[derive(Clone, Debug)]
struct Cached {
    decision: Decision,
    /// Unix seconds of the `now` it was decided at.
    decided_at: u64,
    /// Its place in `Access::by_age`.
    seq: u64,
}

/// Cached access decisions for one registry.
#[derive(Clone, Debug)]
pub struct Access {
    entries: BTreeMap<WgKey, Cached>,
    /// The same keys by insertion, oldest first: what capacity evicts.
    by_age: BTreeMap<u64, WgKey>,
    next_seq: u64,
    max_age_secs: u64,
    capacity: usize,
    staleness: Staleness,
    hits: u64,
    misses: u64,
}

impl Access {
    pub fn new(config: AccessConfig) -> Self {
        Access {
            entries: BTreeMap::new(),
            by_age: BTreeMap::new(),
            next_seq: 0,
            max_age_secs: config.cache_max_age_secs,
            capacity: config.cache_capacity.max(1),
            staleness: config.staleness,
            hits: 0,
            misses: 0,
        }
    }

    pub fn staleness(&self) -> &Staleness {
        &self.staleness
    }

    /// The decision for `key` given the registry as it is now. The cache
    /// holds the registry's answer; the staleness policy is applied on every
    /// call because it depends on `now`, not on the registry.
    pub fn check(&mut self, registry: &Registry, key: &WgKey, now: u64) -> Decision {
        let fresh = self.entries.get(key).filter(|c| now.saturating_sub(c.decided_at) <= self.max_age_secs);
        let base = match fresh {
            Some(cached) => {
                self.hits += 1;
                cached.decision.clone()
            }
            None => {
                self.misses += 1;
                let decided = decide(registry, key);
                self.remember(*key, decided.clone(), now);
                decided
            }
        };
        self.staleness.apply(base, registry.last_sync(), now)
    }

    fn remember(&mut self, key: WgKey, decision: Decision, now: u64) {
        self.forget(&key);
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.by_age.pop_first() else { break };
            self.entries.remove(&oldest);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_age.insert(seq, key);
        self.entries.insert(key, Cached { decision, decided_at: now, seq });
    }

    fn forget(&mut self, key: &WgKey) {
        if let Some(old) = self.entries.remove(key) {
            self.by_age.remove(&old.seq);
        }
    }

    /// Decisions answered from the cache, and computed from the registry.
    pub(crate) fn cache_counts(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// How many decisions are cached.
    pub fn cached(&self) -> usize {
        self.entries.len()
    }

    /// Like [`check`](Self::check) for a key given as text.
    pub fn check_str(&mut self, registry: &Registry, key: &str, now: u64) -> Decision {
        match WgKey::parse(key.trim()) {
            Ok(k) => self.check(registry, &k, now),
            Err(_) => decide_str(registry, key),
        }
    }

    /// Forgets the decisions an applied event may have changed. Call after
    /// every [`Registry::apply`].
    pub(crate) fn invalidate(&mut self, outcome: &Outcome) {
        for k in &outcome.touched_keys {
            self.forget(k);
        }
    }

    /// Forgets everything (a registry reloaded or replaced wholesale).
    pub fn invalidate_all(&mut self) {
        self.entries.clear();
        self.by_age.clear();
    }
}

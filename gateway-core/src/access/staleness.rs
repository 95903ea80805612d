//! What to answer when the chain state is old (pure; `now` and the last sync
//! time are parameters): serve the last known good state up to a maximum age,
//! then fail closed (default) or keep serving it (fail open).

use serde::{Deserialize, Serialize};

use super::decision::Decision;
use crate::registry::AccessReason;

/// What to do once the chain has not been heard from for the maximum age
/// (`[chain] on_stale`, spelt `fail-closed` / `fail-open` there and in the
/// audit log).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StalePolicy {
    /// Deny every key with `chain_unavailable` once the state is too old
    /// (the safe default: the chain is the only authority).
    #[default]
    FailClosed,
    /// Keep serving the last known good state, however old.
    FailOpen,
}

impl StalePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            StalePolicy::FailClosed => "fail-closed",
            StalePolicy::FailOpen => "fail-open",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staleness {
    /// Seconds since the last successful sync after which the policy applies.
    pub max_age_secs: u64,
    pub policy: StalePolicy,
}

impl Default for Staleness {
    fn default() -> Self {
        // Five minutes: long enough to ride out an RPC provider's restart,
        // short enough that a revoke missed during an outage is not served
        // for long.
        Staleness { max_age_secs: 300, policy: StalePolicy::FailClosed }
    }
}

impl Staleness {
    /// Whether the chain state is older than allowed. Never synced counts as
    /// stale: a fresh gateway with no registry file knows nothing yet.
    pub fn is_stale(&self, last_sync: Option<u64>, now: u64) -> bool {
        match last_sync {
            Some(t) => now.saturating_sub(t) > self.max_age_secs,
            None => true,
        }
    }

    /// Whether grants are withheld right now.
    pub fn withholds(&self, last_sync: Option<u64>, now: u64) -> bool {
        self.policy == StalePolicy::FailClosed && self.is_stale(last_sync, now)
    }

    /// Applies the policy to a decision taken on the registry. Denials keep
    /// their own reason: a revoked key is revoked whatever the RPC does.
    pub fn apply(&self, decision: Decision, last_sync: Option<u64>, now: u64) -> Decision {
        if decision.allowed && self.withholds(last_sync, now) {
            return Decision { allowed: false, reason: AccessReason::ChainUnavailable, slot: None, tunnel_ip: None, ..decision };
        }
        decision
    }
}

/// Notices when the policy starts or stops withholding grants, so the audit
/// log says when and why every peer was cut off or restored.
#[derive(Clone, Debug, Default)]
pub struct StalenessWatch {
    withholding: Option<bool>,
}

impl StalenessWatch {
    /// `Some(now_withholding)` when the state flipped since the last call
    /// (the first call reports the initial state).
    pub fn observe(&mut self, staleness: &Staleness, last_sync: Option<u64>, now: u64) -> Option<bool> {
        let w = staleness.withholds(last_sync, now);
        if self.withholding == Some(w) {
            return None;
        }
        self.withholding = Some(w);
        Some(w)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn granted() -> Decision {
        Decision {
            allowed: true,
            reason: AccessReason::Granted,
            public_key: "k".into(),
            token_id: Some(1),
            node_id: Some("n".into()),
            owner: None,
            slot: Some(crate::registry::PeerSlot(2)),
            tunnel_ip: None,
        }
    }

    #[test]
    fn fail_closed_denies_past_the_max_age_only() {
        let s = Staleness { max_age_secs: 60, policy: StalePolicy::FailClosed };
        assert!(s.apply(granted(), Some(1000), 1060).allowed);
        let d = s.apply(granted(), Some(1000), 1061);
        assert_eq!((d.allowed, d.reason, d.slot), (false, AccessReason::ChainUnavailable, None));
        assert_eq!(s.apply(granted(), None, 0).reason, AccessReason::ChainUnavailable);
    }

    #[test]
    fn fail_open_keeps_the_last_known_good_state() {
        let s = Staleness { max_age_secs: 60, policy: StalePolicy::FailOpen };
        assert!(s.apply(granted(), Some(0), 1_000_000).allowed);
    }

    #[test]
    fn denials_keep_their_reason_when_stale() {
        let s = Staleness { max_age_secs: 60, policy: StalePolicy::FailClosed };
        let revoked = Decision { allowed: false, reason: AccessReason::Revoked, ..granted() };
        assert_eq!(s.apply(revoked, Some(0), 1000).reason, AccessReason::Revoked);
    }

    #[test]
    fn watch_reports_flips_once() {
        let s = Staleness { max_age_secs: 60, policy: StalePolicy::FailClosed };
        let mut w = StalenessWatch::default();
        assert_eq!(w.observe(&s, Some(100), 100), Some(false));
        assert_eq!(w.observe(&s, Some(100), 150), None);
        assert_eq!(w.observe(&s, Some(100), 161), Some(true));
        assert_eq!(w.observe(&s, Some(100), 500), None);
        assert_eq!(w.observe(&s, Some(500), 500), Some(false));
    }
}

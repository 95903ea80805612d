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
    pub(crate) fn is_stale(&self, last_sync: Option<u64>, now: u64) -> bool {
        match last_sync {
            Some(t) => now.saturating_sub(t) > self.max_age_secs,
            None => true,
        }
    }

    /// Whether grants are withheld right now.
    pub(crate) fn withholds(&self, last_sync: Option<u64>, now: u64) -> bool {
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
pub(crate) struct StalenessWatch {
    withholding: Option<bool>,
    /// `now` of the first call: a chain never heard from counts as silent
    /// since then.
    started: Option<u64>,
}

impl StalenessWatch {
    /// `Some(now_withholding)` when the state flipped since the last call.
    /// The first call reports only a start that withholds because the
    /// saved state is too old. A start that has not synced yet is no
    /// outage (nothing is granted before the first sync anyway): it counts
    /// as withholding only once the chain stayed silent for the maximum
    /// age since that first call.
    pub(crate) fn observe(&mut self, staleness: &Staleness, last_sync: Option<u64>, now: u64) -> Option<bool> {
        let started = *self.started.get_or_insert(now);
        let w = staleness.withholds(last_sync.or(Some(started)), now);
        let first = self.withholding.is_none();
        if self.withholding == Some(w) {
            return None;
        }
        self.withholding = Some(w);
        (!first || w).then_some(w)
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
        assert_eq!(w.observe(&s, Some(100), 100), None, "a fresh start serving grants is no change");
        assert_eq!(w.observe(&s, Some(100), 150), None);
        assert_eq!(w.observe(&s, Some(100), 161), Some(true));
        assert_eq!(w.observe(&s, Some(100), 500), None);
        assert_eq!(w.observe(&s, Some(500), 500), Some(false));
    }

    #[test]
    fn a_start_before_the_first_sync_is_not_an_outage() {
        let s = Staleness { max_age_secs: 60, policy: StalePolicy::FailClosed };
        let mut w = StalenessWatch::default();
        assert_eq!(w.observe(&s, None, 1000), None, "no chain_unavailable line before the first sync was tried");
        assert_eq!(w.observe(&s, None, 1030), None);
        assert_eq!(w.observe(&s, Some(1040), 1040), None, "the first sync serves grants without a line");
        assert_eq!(w.observe(&s, Some(1040), 1101), Some(true), "then silence is an outage again");
        // A chain that never answers is reported the maximum age after the start.
        let mut never = StalenessWatch::default();
        assert_eq!(never.observe(&s, None, 1000), None);
        assert_eq!(never.observe(&s, None, 1061), Some(true));
        // A restart whose saved state is already too old says so at once.
        let mut restart = StalenessWatch::default();
        assert_eq!(restart.observe(&s, Some(100), 1000), Some(true));
        // Fail-open never withholds.
        let open = Staleness { max_age_secs: 60, policy: StalePolicy::FailOpen };
        assert_eq!(StalenessWatch::default().observe(&open, Some(100), 1000), None);
    }
}

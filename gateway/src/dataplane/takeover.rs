//! Stateless takeover (pure, time is a parameter): a transport packet,
//! handshake response or cookie reply whose receiver index names a granted
//! peer's slot (`receiver_index >> 8`) but no session this device holds
//! comes from a node whose session lives on another gateway with the same
//! key (a standby that just took the address) or on this one before it
//! restarted. Instead of dropping it and leaving the node to its own timers
//! (keepalive + rekey timeouts: about 15 s), the device initiates a
//! handshake to the packet's source at once; boringtun answers the response
//! with a keepalive on the new session, which makes the node switch to it.
//!
//! Anybody can forge such a packet for a granted slot, so each slot buys at
//! most one initiation (148 bytes) per [`TAKEOVER_INTERVAL`], and a `Tunn`
//! made for a takeover that got no session is dropped again after it, so
//! forged packets cannot hold memory for idle peers either.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Tunn, TunnResult};

/// REKEY_TIMEOUT of the WireGuard whitepaper (section 6.1), the spacing of
/// handshake retries: a takeover initiation per slot at most this often.
pub const TAKEOVER_INTERVAL: Duration = Duration::from_secs(5);

/// What the takeover did, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TakeoverCounters {
    /// Handshakes initiated because a packet named a slot's peer but no session.
    pub initiated: u64,
    /// Such packets that found their slot's initiation already spent.
    pub rate_limited: u64,
    /// Such packets while takeover is switched off.
    pub disabled: u64,
    /// `Tunn`s made for a takeover and dropped again: no session came of them.
    pub abandoned: u64,
}

/// One slot's last takeover.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    at: Instant,
    /// The `Tunn` was made for this takeover (the peer had none).
    made_tunn: bool,
}

/// The takeover's budget per slot. Entries exist only for slots of peers
/// that are configured (the device asks only for those) and live for one
/// interval, so the table is bounded by the peer count.
#[derive(Debug)]
pub struct Takeover {
    enabled: bool,
    attempts: BTreeMap<u32, Attempt>,
    counters: TakeoverCounters,
}

impl Default for Takeover {
    fn default() -> Self {
        Self::new(true)
    }
}

impl Takeover {
    pub fn new(enabled: bool) -> Self {
        Takeover { enabled, attempts: BTreeMap::new(), counters: TakeoverCounters::default() }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Off: orphan packets are dropped and the nodes' own timers recover
    /// (the anchor of `cargo xtask bench failover`).
    pub fn set_enabled(&mut self, enabled: bool) {
        self.enabled = enabled;
    }

    pub fn counters(&self) -> &TakeoverCounters {
        &self.counters
    }

    /// A packet named `slot`'s peer but no session it holds: whether to
    /// initiate a handshake now. `has_tunn` says whether the peer already has
    /// a `Tunn` (one made now is dropped again if no session comes of it).
    pub fn admit(&mut self, slot: u32, has_tunn: bool, now: Instant) -> bool {
        if !self.enabled {
            self.counters.disabled += 1;
            return false;
        }
        if let Some(last) = self.attempts.get(&slot) {
            if now.saturating_duration_since(last.at) < TAKEOVER_INTERVAL {
                self.counters.rate_limited += 1;
                return false;
            }
        }
        // A Tunn made by an earlier attempt that is still there counts as made
        // for this one too: it is dropped if this attempt fails as well.
        let made_tunn = !has_tunn || self.attempts.get(&slot).is_some_and(|a| a.made_tunn);
        self.attempts.insert(slot, Attempt { at: now, made_tunn });
        self.counters.initiated += 1;
        true
    }

    /// Forgets attempts older than one interval and returns the slots whose
    /// `Tunn` was made for that attempt: the device drops each one that still
    /// has no session (`abandon`).
    pub fn expire(&mut self, now: Instant) -> Vec<u32> {
        let expired: Vec<u32> = self
            .attempts
            .iter()
            .filter(|(_, a)| now.saturating_duration_since(a.at) >= TAKEOVER_INTERVAL)
            .map(|(slot, _)| *slot)
            .collect();
        let mut made = Vec::new();
        for slot in expired {
            if self.attempts.remove(&slot).is_some_and(|a| a.made_tunn) {
                made.push(slot);
            }
        }
        made
    }

    /// Counts a `Tunn` the device dropped after [`expire`](Self::expire).
    pub fn abandoned(&mut self) {
        self.counters.abandoned += 1;
    }
}

/// Whether boringtun's answer to a response, cookie reply or transport
/// packet means its receiver index names no session (or handshake) this
/// `Tunn` holds: none at that index, another index there, or one whose keys
/// or counter window do not fit (both gateways number sessions
/// `slot << 8 | 1, 2, ...`, so the node's index often collides with an older
/// session of this gateway's).
pub fn names_no_session(err: &WireGuardError) -> bool {
    matches!(
        err,
        WireGuardError::NoCurrentSession
            | WireGuardError::WrongIndex
            | WireGuardError::UnexpectedPacket
            | WireGuardError::InvalidAeadTag
            | WireGuardError::InvalidCounter
            | WireGuardError::DuplicateCounter
    )
}

/// A fresh handshake initiation from `tunn` into `out` (148 bytes), even if
/// one is in progress: that one went wherever the peer was before.
pub fn initiation<'a>(tunn: &mut Tunn, out: &'a mut [u8]) -> Option<&'a [u8]> {
    match tunn.format_handshake_initiation(out, true) {
        TunnResult::WriteToNetwork(packet) => Some(packet),
        _ => None,
    }
}

/// Whether `tunn` holds a session (it has completed a handshake that has not
/// expired): a takeover `Tunn` without one is dropped after the interval.
pub fn has_session(tunn: &Tunn) -> bool {
    tunn.time_since_last_handshake().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_initiation_per_slot_per_interval() {
        let mut t = Takeover::new(true);
        let t0 = Instant::now();
        assert!(t.admit(2, false, t0));
        // Every further orphan packet within the interval is refused...
        for ms in [0, 1, 100, 4_999] {
            assert!(!t.admit(2, true, t0 + Duration::from_millis(ms)), "{ms} ms");
        }
        // ...while another slot has its own budget.
        assert!(t.admit(3, false, t0 + Duration::from_millis(10)));
        assert!(t.admit(2, true, t0 + TAKEOVER_INTERVAL));
        assert_eq!(t.counters().initiated, 3);
        assert_eq!(t.counters().rate_limited, 4);
    }

    #[test]
    fn over_a_long_flood_the_initiations_stay_within_the_bound() {
        let mut t = Takeover::new(true);
        let t0 = Instant::now();
        let flood = Duration::from_secs(60);
        let mut admitted = 0u64;
        let mut elapsed = Duration::ZERO;
        while elapsed < flood {
            admitted += u64::from(t.admit(7, admitted > 0, t0 + elapsed));
            t.expire(t0 + elapsed);
            elapsed += Duration::from_millis(3);
        }
        let bound = flood.as_secs().div_ceil(TAKEOVER_INTERVAL.as_secs());
        assert_eq!(admitted, bound, "one per {TAKEOVER_INTERVAL:?} over {flood:?}");
    }

    #[test]
    fn switched_off_it_admits_nothing() {
        let mut t = Takeover::new(false);
        assert!(!t.admit(2, false, Instant::now()));
        assert_eq!(t.counters().disabled, 1);
        assert_eq!(t.counters().initiated, 0);
        t.set_enabled(true);
        assert!(t.admit(2, false, Instant::now()));
    }

    #[test]
    fn expiry_names_the_slots_whose_tunn_was_made_for_the_takeover() {
        let mut t = Takeover::new(true);
        let t0 = Instant::now();
        assert!(t.admit(2, false, t0)); // no Tunn before: made for it
        assert!(t.admit(3, true, t0)); // the peer had one already
        assert_eq!(t.expire(t0 + Duration::from_secs(1)), Vec::<u32>::new());
        assert_eq!(t.expire(t0 + TAKEOVER_INTERVAL), vec![2]);
        // Forgotten: the next orphan packet may try again at once.
        assert!(t.admit(3, true, t0 + TAKEOVER_INTERVAL));
        // A retry before the expiry ran, on the Tunn the failed attempt
        // made, still owns that Tunn.
        assert!(t.admit(4, false, t0));
        assert!(t.admit(4, true, t0 + TAKEOVER_INTERVAL));
        assert_eq!(t.expire(t0 + 2 * TAKEOVER_INTERVAL), vec![4], "slot 3 had its Tunn before");
    }

    #[test]
    fn only_errors_about_the_index_count_as_no_session() {
        for e in [WireGuardError::NoCurrentSession, WireGuardError::WrongIndex, WireGuardError::InvalidAeadTag] {
            assert!(names_no_session(&e), "{e:?}");
        }
        for e in [WireGuardError::InvalidMac, WireGuardError::UnderLoad, WireGuardError::InvalidPacket] {
            assert!(!names_no_session(&e), "{e:?}");
        }
    }
}

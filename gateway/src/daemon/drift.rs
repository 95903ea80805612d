//! Desired vs real (pure): compares what the executor applied (the chain's
//! word) with what the data plane and the pinned XDP maps hold when read
//! back, and names each difference with the op that puts it back, as
//! innernet diffs its desired peers against the live device. A peer added or
//! removed with `wg set`, a slot opened with `gateway xdp allow`, shows up
//! here and is undone; nothing else ever changes `Applied`.

use gateway_core::plan::{Applied, AppliedPeer, Op};
use gateway_core::registry::{PeerSlot, WgKey};
use ipnet::{IpNet, Ipv4Net};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The generation a repair reopens a slot with: the kernel only shows it
/// (`bpftool map dump`), and a repair is not a new grant.
const REPAIR_GENERATION: u32 = 0;

/// One peer as the data plane reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LivePeer {
    pub key: WgKey,
    pub slot: PeerSlot,
    pub allowed_ips: Vec<IpNet>,
}

/// One way the live state differs from the applied one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Drift {
    /// On the device, granted by nothing on the chain (`wg set ... peer`).
    UnknownPeer { key: WgKey, slot: PeerSlot },
    /// Granted, gone from the device (`wg set ... peer K remove`).
    MissingPeer { peer: AppliedPeer },
    /// Granted, on the device with another slot or other allowed IPs.
    ChangedPeer { peer: AppliedPeer, live: LivePeer },
    /// Open in the kernel, held by no granted peer (`gateway xdp allow`).
    OpenedSlot { slot: PeerSlot },
    /// A granted peer's slot closed in the kernel.
    ClosedSlot { slot: PeerSlot },
}

impl Drift {
    /// The metric label.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Drift::UnknownPeer { .. } => "unknown_peer",
            Drift::MissingPeer { .. } => "missing_peer",
            Drift::ChangedPeer { .. } => "changed_peer",
            Drift::OpenedSlot { .. } => "opened_slot",
            Drift::ClosedSlot { .. } => "closed_slot",
        }
    }

    /// The op that puts the live state back to the applied one.
    pub(super) fn repair(&self) -> Op {
        match self {
            Drift::UnknownPeer { key, slot } => Op::RemoveWgPeer { key: *key, slot: *slot },
            // The executor replaces a peer whose slot or allowed IPs differ.
            Drift::MissingPeer { peer } | Drift::ChangedPeer { peer, .. } => {
                Op::AddWgPeer { key: peer.key, slot: peer.slot, allowed_ip: peer.allowed_ip }
            }
            Drift::OpenedSlot { slot } => Op::CloseSlot { slot: *slot },
            Drift::ClosedSlot { slot } => Op::OpenSlot { slot: *slot, generation: REPAIR_GENERATION },
        }
    }
}

/// What changed, `live => applied`, for the log line.
impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::UnknownPeer { key, slot } => write!(f, "peer {key} in slot {}: present => absent", slot.0),
            Drift::MissingPeer { peer } => write!(f, "peer {} in slot {}: absent => present", peer.key, peer.slot.0),
            Drift::ChangedPeer { peer, live } => write!(
                f,
                "peer {}: slot {} allowed-ips {} => slot {} allowed-ips {}/32",
                peer.key,
                live.slot.0,
                live.allowed_ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
                peer.slot.0,
                peer.allowed_ip
            ),
            Drift::OpenedSlot { slot } => write!(f, "XDP slot {}: open => closed", slot.0),
            Drift::ClosedSlot { slot } => write!(f, "XDP slot {}: closed => open", slot.0),
        }
    }
}

/// The differences between `applied` and the live peers and open slots
/// (`None` when XDP is off), in the order their repairs go: removals
/// before additions, a peer before its slot (the plan's order).
pub(super) fn diff(applied: &Applied, live: &[LivePeer], open_slots: Option<&[u32]>) -> Vec<Drift> {
    let granted: BTreeMap<WgKey, &AppliedPeer> = applied.peers().map(|p| (p.key, p)).collect();
    let live_by_key: BTreeMap<WgKey, &LivePeer> = live.iter().map(|p| (p.key, p)).collect();
    let mut removals = Vec::new();
    let mut peers = Vec::new();
    let mut slots = Vec::new();
    for p in live_by_key.values() {
        if !granted.contains_key(&p.key) {
            removals.push(Drift::UnknownPeer { key: p.key, slot: p.slot });
        }
    }
    for a in granted.values() {
        match live_by_key.get(&a.key) {
            None => peers.push(Drift::MissingPeer { peer: **a }),
            Some(l) if l.slot != a.slot || l.allowed_ips != [host(a)] => {
                peers.push(Drift::ChangedPeer { peer: **a, live: (*l).clone() });
            }
            Some(_) => {}
        }
    }
    if let Some(open) = open_slots {
        let open: BTreeSet<PeerSlot> = open.iter().copied().map(PeerSlot).collect();
        let want: BTreeSet<PeerSlot> = applied.peers().filter(|p| p.slot_open).map(|p| p.slot).collect();
        removals.extend(open.difference(&want).map(|slot| Drift::OpenedSlot { slot: *slot }));
        slots.extend(want.difference(&open).map(|slot| Drift::ClosedSlot { slot: *slot }));
    }
    removals.extend(peers);
    removals.extend(slots);
    removals
}

fn host(p: &AppliedPeer) -> IpNet {
    IpNet::V4(Ipv4Net::from(p.allowed_ip))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::Ipv4Addr;

    fn key(n: u8) -> WgKey {
        WgKey([n; 32])
    }

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, 0, n)
    }

    /// Peers 1 and 2 granted in slots 1 and 2, both slots open.
    fn applied() -> Applied {
        let mut a = Applied::default();
        for n in [1u8, 2] {
            a.record(&Op::AddWgPeer { key: key(n), slot: PeerSlot(n.into()), allowed_ip: ip(n + 1) });
            a.record(&Op::OpenSlot { slot: PeerSlot(n.into()), generation: n.into() });
        }
        a
    }

    fn live(n: u8) -> LivePeer {
        LivePeer { key: key(n), slot: PeerSlot(n.into()), allowed_ips: vec![IpNet::V4(Ipv4Net::from(ip(n + 1)))] }
    }

    #[test]
    fn the_live_state_as_applied_has_no_drift() {
        assert_eq!(diff(&applied(), &[live(2), live(1)], Some(&[1, 2])), vec![]);
        assert_eq!(diff(&applied(), &[live(1), live(2)], None), vec![], "XDP off: slots are not compared");
    }

    #[test]
    fn each_hand_made_change_is_named_with_the_op_that_undoes_it() {
        let a = applied();
        let stranger = LivePeer { key: key(9), slot: PeerSlot(65_535), allowed_ips: vec!["10.99.0.50/32".parse().unwrap()] };
        let mut moved = live(2);
        moved.allowed_ips = vec!["10.99.0.0/24".parse().unwrap()];
        let drifts = diff(&a, &[live(1), moved, stranger], Some(&[2, 7]));
        let ops: Vec<Op> = drifts.iter().map(Drift::repair).collect();
        assert_eq!(
            ops,
            vec![
                Op::RemoveWgPeer { key: key(9), slot: PeerSlot(65_535) },
                Op::CloseSlot { slot: PeerSlot(7) },
                Op::AddWgPeer { key: key(2), slot: PeerSlot(2), allowed_ip: ip(3) },
                Op::OpenSlot { slot: PeerSlot(1), generation: REPAIR_GENERATION },
            ]
        );
        let kinds: Vec<&str> = drifts.iter().map(Drift::kind).collect();
        assert_eq!(kinds, ["unknown_peer", "opened_slot", "changed_peer", "closed_slot"]);
        assert_eq!(drifts[2].to_string(), format!("peer {}: slot 2 allowed-ips 10.99.0.0/24 => slot 2 allowed-ips 10.99.0.3/32", key(2)));
    }

    #[test]
    fn a_removed_peer_comes_back_before_its_slot_opens() {
        let drifts = diff(&applied(), &[live(2)], Some(&[2]));
        let ops: Vec<Op> = drifts.iter().map(Drift::repair).collect();
        assert_eq!(
            ops,
            vec![
                Op::AddWgPeer { key: key(1), slot: PeerSlot(1), allowed_ip: ip(2) },
                Op::OpenSlot { slot: PeerSlot(1), generation: REPAIR_GENERATION },
            ]
        );
    }

    #[test]
    fn a_slot_the_plan_left_closed_is_not_drift() {
        // The executor failed between a grant's two steps: the plan reopens
        // it; the drift check must not race it.
        let mut a = applied();
        a.record(&Op::CloseSlot { slot: PeerSlot(2) });
        assert_eq!(diff(&a, &[live(1), live(2)], Some(&[1])), vec![]);
        assert_eq!(diff(&a, &[live(1), live(2)], Some(&[1, 2])), vec![Drift::OpenedSlot { slot: PeerSlot(2) }]);
    }
}

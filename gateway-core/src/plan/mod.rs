//! The planner (pure): diffs the desired peer set (registry + access policy)
//! against what is applied and emits the minimal, ordered ops an executor
//! applies to the XDP maps and the data plane.
//!
//! Order (DESIGN.md "Data flow"): every removal before every addition, so a
//! key moving between slots is never present twice in the data plane; a
//! removal closes the XDP slot first, then denies the peer's last endpoint,
//! then removes the WireGuard peer; an addition adds the WireGuard peer
//! first, then opens the slot. Within each phase, ascending slot order.

#[cfg(test)]
mod pipeline_tests;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

use crate::access::{decide, Staleness};
use crate::registry::{AccessReason, Admission, PeerSlot, Registry, WgKey};

/// The peer set to converge to, and where to ask why any other key is out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired<'r> {
    /// Each admitted peer; its tunnel IP is the only source address it may
    /// use inside the tunnel (/32).
    pub peers: BTreeMap<PeerSlot, Admission>,
    /// Asked only for the keys a plan removes (a deny entry records why).
    registry: Option<&'r Registry>,
    /// The staleness policy withholds every grant. Peers removed for that
    /// did nothing wrong: their endpoints are not denied, so they reconnect
    /// as soon as the chain is back.
    pub withheld: bool,
}

impl Desired<'_> {
    fn removal_reason(&self, key: &WgKey) -> AccessReason {
        if self.withheld {
            return AccessReason::ChainUnavailable;
        }
        self.registry.map_or(AccessReason::UnknownKey, |r| decide(r, key).reason)
    }
}

/// The desired set: the registry's admitted peers, unless the staleness
/// policy withholds grants at `now` (unix seconds).
pub fn desired<'r>(registry: &'r Registry, staleness: &Staleness, now: u64) -> Desired<'r> {
    desired_from(registry.admitted().values(), registry, staleness, now)
}

/// Like [`desired`], from admissions the caller keeps up to date (the
/// control core updates them from each event's changes instead of
/// re-deriving every token's standing per event).
pub(crate) fn desired_from<'a, 'r>(
    admitted: impl IntoIterator<Item = &'a Admission>,
    registry: &'r Registry,
    staleness: &Staleness,
    now: u64,
) -> Desired<'r> {
    if staleness.withholds(registry.last_sync(), now) {
        return Desired { peers: BTreeMap::new(), registry: Some(registry), withheld: true };
    }
    let peers = admitted.into_iter().map(|a| (a.slot, *a)).collect();
    Desired { peers, registry: Some(registry), withheld: false }
}

/// One step for the executor. XDP ops touch only the maps, WireGuard ops
/// only the data plane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// XDP: `GW_ALLOW_SLOTS[slot] = 0`; transport packets for it drop in the kernel.
    CloseSlot { slot: PeerSlot },
    /// XDP: drop handshake initiations from `endpoint` until `until_ns`
    /// (CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`); `key` is the key
    /// that was refused there.
    DenyEndpoint { endpoint: SocketAddr, key: WgKey, until_ns: u64, reason: AccessReason },
    /// Data plane: drop the peer and its sessions.
    RemoveWgPeer { key: WgKey, slot: PeerSlot },
    /// Data plane: add the peer; its sessions use index `slot << 8 | n`.
    AddWgPeer { key: WgKey, slot: PeerSlot, allowed_ip: Ipv4Addr },
    /// XDP: `GW_ALLOW_SLOTS[slot] = {allowed: 1, generation}`.
    OpenSlot { slot: PeerSlot, generation: u32 },
    /// XDP: remove a deny entry made when this slot's previous key (or this
    /// very key) was refused, now that it is granted (the new owner often
    /// sits at the same endpoint).
    LiftDeny { endpoint: SocketAddr },
}

/// A peer as applied, plus the endpoint the data plane last saw it at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppliedPeer {
    pub key: WgKey,
    pub slot: PeerSlot,
    pub allowed_ip: Ipv4Addr,
    pub endpoint: Option<SocketAddr>,
    pub slot_open: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DenyRecord {
    /// The slot of the peer that was removed, if the deny came from a removal.
    slot: Option<PeerSlot>,
    key: WgKey,
    until_ns: u64,
}

/// What the executor has applied so far, as the core knows it: updated
/// from each [`Executed`] the executor hands back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    peers: BTreeMap<PeerSlot, AppliedPeer>,
    denied: BTreeMap<SocketAddr, DenyRecord>,
    /// The same denies by expiry, to prune, and to evict the soonest-expiring
    /// one past the kernel table's size (`DENY_SLOTS`).
    deny_expiry: std::collections::BTreeSet<(u64, SocketAddr)>,
    last_generation: u32,
}

impl Applied {
    pub fn peers(&self) -> impl Iterator<Item = &AppliedPeer> {
        self.peers.values()
    }

    pub fn peer(&self, slot: PeerSlot) -> Option<&AppliedPeer> {
        self.peers.get(&slot)
    }

    /// The data plane learned (or roamed to) a peer's endpoint.
    pub(crate) fn set_endpoint(&mut self, slot: PeerSlot, endpoint: SocketAddr) {
        if let Some(p) = self.peers.get_mut(&slot) {
            p.endpoint = Some(endpoint);
        }
    }

    /// Forgets denies that have expired (the kernel ignores them already).
    pub(crate) fn prune_denies(&mut self, now_ns: u64) {
        while let Some(&(until_ns, endpoint)) = self.deny_expiry.first() {
            if until_ns > now_ns {
                break;
            }
            self.deny_expiry.pop_first();
            self.denied.remove(&endpoint);
        }
    }

    fn forget_deny(&mut self, endpoint: &SocketAddr) {
        if let Some(old) = self.denied.remove(endpoint) {
            self.deny_expiry.remove(&(old.until_ns, *endpoint));
        }
    }

    /// Endpoints denied and not yet expired at `now_ns`.
    pub fn denied_endpoints(&self, now_ns: u64) -> impl Iterator<Item = SocketAddr> + '_ {
        self.denied.iter().filter(move |(_, d)| d.until_ns > now_ns).map(|(e, _)| *e)
    }

    /// Records one op the executor applied.
    pub fn record(&mut self, op: &Op) {
        match *op {
            Op::CloseSlot { slot } => {
                if let Some(p) = self.peers.get_mut(&slot) {
                    p.slot_open = false;
                }
            }
            Op::DenyEndpoint { endpoint, key, until_ns, .. } => {
                let slot = self.peers.values().find(|p| p.key == key).map(|p| p.slot);
                self.forget_deny(&endpoint);
                self.denied.insert(endpoint, DenyRecord { slot, key, until_ns });
                self.deny_expiry.insert((until_ns, endpoint));
                // Bounded by the kernel table's size: a flood of rejected
                // handshakes from spoofed sources must not grow memory.
                while self.denied.len() > gateway_common::DENY_SLOTS as usize {
                    let Some((_, oldest)) = self.deny_expiry.pop_first() else { break };
                    self.denied.remove(&oldest);
                }
            }
            Op::RemoveWgPeer { slot, .. } => {
                self.peers.remove(&slot);
            }
            Op::AddWgPeer { key, slot, allowed_ip } => {
                self.peers.insert(slot, AppliedPeer { key, slot, allowed_ip, endpoint: None, slot_open: false });
            }
            Op::OpenSlot { slot, generation } => {
                self.last_generation = self.last_generation.max(generation);
                if let Some(p) = self.peers.get_mut(&slot) {
                    p.slot_open = true;
                }
            }
            Op::LiftDeny { endpoint } => {
                self.forget_deny(&endpoint);
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanConfig {
    /// How long a revoked peer's endpoint stays denied at the XDP front.
    /// Long enough that its retrying client (WireGuard retries every 5 s)
    /// is dropped in the kernel; short enough that an endpoint reused by
    /// someone else (NAT) is not shut out for long.
    pub deny_for: Duration,
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig { deny_for: Duration::from_secs(120) }
    }
}

impl PlanConfig {
    fn deny_until(&self, now_ns: u64) -> u64 {
        now_ns.saturating_add(u64::try_from(self.deny_for.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// At start-up the pinned XDP maps still hold the slots the previous run
/// opened, while nothing is applied in this process: close those that are
/// no longer desired (revoked while the gateway was down). Desired ones are
/// (re)opened by the normal plan once their WireGuard peer is back.
pub(crate) fn close_stale_kernel_slots(open_in_kernel: impl IntoIterator<Item = PeerSlot>, desired: &Desired) -> Vec<Op> {
    let open: std::collections::BTreeSet<PeerSlot> = open_in_kernel.into_iter().collect();
    open.into_iter().filter(|s| !desired.peers.contains_key(s)).map(|slot| Op::CloseSlot { slot }).collect()
}

/// The op for a handshake initiation the data plane refused (its key read
/// with `parse_handshake_anon`): deny the endpoint at the XDP front so its
/// retries die in the kernel. Nothing when the refusal is only the staleness
/// policy's: that peer did nothing wrong and must get back in at once.
pub(crate) fn reject_handshake(
    key: WgKey,
    decision: &crate::access::Decision,
    endpoint: SocketAddr,
    config: &PlanConfig,
    now_ns: u64,
) -> Option<Op> {
    if decision.allowed || decision.reason == AccessReason::ChainUnavailable {
        return None;
    }
    Some(Op::DenyEndpoint { endpoint, key, until_ns: config.deny_until(now_ns), reason: decision.reason })
}

/// The op an executor could not apply, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("op {index} ({op:?}) failed: {error}")]
pub struct FailedOp {
    /// Its position in the step's ops.
    pub index: usize,
    pub op: Op,
    pub error: String,
}

/// What an executor did with a step's ops, handed back to the core as an
/// input ([`crate::control::Control::handle_applied`]): the ops it carried
/// out, in order, and the one that failed (the ops after it were not tried).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "what was executed goes back to the control core, which records what is applied"]
pub struct Executed {
    pub applied: Vec<Op>,
    pub failed: Option<FailedOp>,
}

/// Applies ops in order through `apply` and stops at the first failure
/// (whose error is kept with its causes, `{:#}`).
/// Nothing is recorded here: [`Executed`] goes back to the core, whose
/// next plan holds the ops not applied, so a failed step is retried, never
/// skipped.
pub fn execute<E: std::fmt::Display>(ops: &[Op], mut apply: impl FnMut(&Op) -> Result<(), E>) -> Executed {
    let mut executed = Executed::default();
    for (index, op) in ops.iter().enumerate() {
        if let Err(err) = apply(op) {
            executed.failed = Some(FailedOp { index, op: op.clone(), error: format!("{err:#}") });
            break;
        }
        executed.applied.push(op.clone());
    }
    executed
}

/// The ops that take `applied` to `desired`; empty when they agree.
/// `now_ns` is CLOCK_MONOTONIC, the clock the deny expiry is compared with.
pub fn plan(desired: &Desired, applied: &Applied, config: &PlanConfig, now_ns: u64) -> Vec<Op> {
    let same = |a: &AppliedPeer, d: &Admission| a.key == d.key && a.allowed_ip == d.tunnel_ip;
    let desired_keys: std::collections::BTreeSet<WgKey> = desired.peers.values().map(|p| p.key).collect();
    let mut removals = Vec::new();
    for (slot, a) in &applied.peers {
        let wanted = desired.peers.get(slot);
        if wanted.is_some_and(|d| same(a, d)) {
            continue;
        }
        removals.push(Op::CloseSlot { slot: *slot });
        // A rekey keeps the slot (same token, same machine): denying its
        // endpoint would drop the new key's handshakes too. A key that only
        // moves to another slot is still allowed.
        let reissued = wanted.is_some() || desired_keys.contains(&a.key);
        if let (Some(endpoint), false, false) = (a.endpoint, reissued, desired.withheld) {
            let until_ns = config.deny_until(now_ns);
            removals.push(Op::DenyEndpoint { endpoint, key: a.key, until_ns, reason: desired.removal_reason(&a.key) });
        }
        removals.push(Op::RemoveWgPeer { key: a.key, slot: *slot });
    }
    let mut additions = Vec::new();
    let mut generation = applied.last_generation;
    for (slot, d) in &desired.peers {
        match applied.peers.get(slot) {
            Some(a) if same(a, d) => {
                if !a.slot_open {
                    // An executor that failed between the two steps of a grant.
                    generation = generation.wrapping_add(1);
                    additions.push(Op::OpenSlot { slot: *slot, generation });
                }
                continue;
            }
            _ => {}
        }
        generation = generation.wrapping_add(1);
        additions.push(Op::AddWgPeer { key: d.key, slot: *slot, allowed_ip: d.tunnel_ip });
        additions.push(Op::OpenSlot { slot: *slot, generation });
        for (endpoint, deny) in &applied.denied {
            if (deny.slot == Some(*slot) || deny.key == d.key) && deny.until_ns > now_ns {
                additions.push(Op::LiftDeny { endpoint: *endpoint });
            }
        }
    }
    removals.extend(additions);
    removals
}

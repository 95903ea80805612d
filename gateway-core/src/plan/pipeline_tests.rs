//! Scripted chain events through registry -> access -> plan, asserting the
//! exact ops and audit records; property tests over arbitrary streams.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::access::audit::{AuditAction, AuditRecord};
use crate::access::{decide, AccessConfig, StalePolicy};
use crate::control::{Control, ControlConfig, Step};
use crate::chain::{ChainEvent, SnapshotCause};
use crate::testing::*;

const MAX_AGE: u64 = 60;
const DENY_NS: u64 = 120_000_000_000;

/// The daemon's loop without I/O: the control core, a fake executor that
/// always succeeds, an audit log in memory and a hand-driven clock.
struct Pipeline {
    control: Control,
    audit: Vec<AuditRecord>,
    now: u64,
    now_ns: u64,
}

impl Pipeline {
    fn new() -> Self {
        let staleness = Staleness { max_age_secs: MAX_AGE, policy: StalePolicy::FailClosed };
        let config = ControlConfig {
            access: AccessConfig { staleness, ..AccessConfig::default() },
            plan: PlanConfig { deny_for: Duration::from_nanos(DENY_NS) },
        };
        Pipeline { control: Control::new(registry(), config), audit: Vec::new(), now: 1_000, now_ns: 5_000_000_000 }
    }

    /// Applies a batch of events, then executes the plan.
    fn step(&mut self, events: &[ChainEvent]) -> Vec<Op> {
        let step = self.control.on_chain_events(events, self.now, self.now_ns);
        self.run(step)
    }

    fn replan(&mut self) -> Vec<Op> {
        let step = self.control.on_tick(self.now, self.now_ns);
        self.run(step)
    }

    fn run(&mut self, step: Step) -> Vec<Op> {
        let executed = execute(&step.ops, |_| Ok::<(), String>(()));
        assert_eq!(executed.failed, None, "a fake executor never fails");
        self.control.handle_applied(&executed, self.now);
        self.audit.extend(step.audit);
        step.ops
    }

    fn check(&mut self, k: &WgKey) -> crate::access::Decision {
        self.control.check(k, self.now)
    }

    fn take_audit(&mut self) -> Vec<(AuditAction, Option<u128>, AccessReason, bool)> {
        self.audit.drain(..).map(|r| (r.action, r.token_id, r.reason, r.access)).collect()
    }
}

fn ep(n: u8) -> SocketAddr {
    // Documentation addresses (RFC 5737): this test sends nothing anywhere.
    SocketAddr::from(([192, 0, 2, n], 51820))
}

fn ip(n: u8) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(10, 88, 0, n)
}

#[test]
fn scripted_chain_history_yields_exact_ops_and_audit() {
    use AuditAction::*;
    let mut p = Pipeline::new();
    let until = p.now_ns + DENY_NS;

    // Never synced: fail closed grants nothing yet, and a start before its
    // first sync is no outage (no `chain_unavailable` policy change).
    assert_eq!(p.step(&[granted(1, 11, 10, 0)]), vec![]);
    assert_eq!(p.take_audit(), vec![(Grant, Some(1), AccessReason::Granted, true)]);

    // Synced: the grant reaches the data plane, then the XDP slot.
    assert_eq!(
        p.step(&[synced(10)]),
        vec![Op::AddWgPeer { key: key(11), slot: PeerSlot(2), allowed_ip: ip(2) }, Op::OpenSlot { slot: PeerSlot(2), generation: 1 }]
    );
    assert_eq!(p.take_audit(), vec![], "the first sync serves grants without a policy change");

    assert_eq!(
        p.step(&[granted(2, 22, 11, 0), synced(11)]),
        vec![Op::AddWgPeer { key: key(22), slot: PeerSlot(3), allowed_ip: ip(3) }, Op::OpenSlot { slot: PeerSlot(3), generation: 2 }]
    );
    p.take_audit();
    p.control.on_endpoint(PeerSlot(2), ep(1));
    p.control.on_endpoint(PeerSlot(3), ep(2));

    // Revoke: XDP first (slot, then the endpoint), then the WireGuard peer.
    assert_eq!(
        p.step(&[revoked(1, 12, 0)]),
        vec![
            Op::CloseSlot { slot: PeerSlot(2) },
            Op::DenyEndpoint { endpoint: ep(1), key: key(11), until_ns: until, reason: AccessReason::Revoked },
            Op::RemoveWgPeer { key: key(11), slot: PeerSlot(2) },
        ]
    );
    assert_eq!(p.take_audit(), vec![(Revoke, Some(1), AccessReason::Revoked, false)]);

    // Transfer: the key is unbound at once.
    assert_eq!(
        p.step(&[transferred(2, 9, 13, 0)]),
        vec![
            Op::CloseSlot { slot: PeerSlot(3) },
            Op::DenyEndpoint { endpoint: ep(2), key: key(22), until_ns: until, reason: AccessReason::UnboundAfterTransfer },
            Op::RemoveWgPeer { key: key(22), slot: PeerSlot(3) },
        ]
    );
    assert_eq!(p.take_audit(), vec![(Transfer, Some(2), AccessReason::UnboundAfterTransfer, false)]);

    // The new owner binds a key: same token, same slot and IP; the deny
    // left by the previous key is lifted.
    assert_eq!(
        p.step(&[key_updated(9, 23, 14, 0), snapshot(2, 9, 23, true, 14, SnapshotCause::KeyUpdated)]),
        vec![
            Op::AddWgPeer { key: key(23), slot: PeerSlot(3), allowed_ip: ip(3) },
            Op::OpenSlot { slot: PeerSlot(3), generation: 3 },
            Op::LiftDeny { endpoint: ep(2) },
        ]
    );
    assert_eq!(
        p.take_audit(),
        vec![(Rekey, Some(2), AccessReason::UnboundAfterTransfer, false), (Grant, Some(2), AccessReason::Granted, true)]
    );

    // Rekey of a live peer = revoke old + grant new on the same slot, and
    // no endpoint deny (the same machine comes back with the new key).
    p.step(&[granted(3, 33, 15, 0)]);
    p.control.on_endpoint(PeerSlot(4), ep(3));
    p.take_audit();
    assert_eq!(
        p.step(&[key_updated(3, 34, 16, 0), snapshot(3, 3, 34, true, 16, SnapshotCause::KeyUpdated)]),
        vec![
            Op::CloseSlot { slot: PeerSlot(4) },
            Op::RemoveWgPeer { key: key(33), slot: PeerSlot(4) },
            Op::AddWgPeer { key: key(34), slot: PeerSlot(4), allowed_ip: ip(4) },
            Op::OpenSlot { slot: PeerSlot(4), generation: 5 },
        ]
    );
    let audit: Vec<_> = p.audit.iter().map(|r| (r.action, r.public_key.clone(), r.previous_key.clone())).collect();
    assert_eq!(
        audit,
        vec![(Rekey, Some(key_b64(33)), None), (Rekey, Some(key_b64(34)), None)],
        "the log's own rekey names the old key; the snapshot names the new"
    );
    p.audit.clear();
    assert_eq!(p.check(&key(33)).reason, AccessReason::KeyRotated);

    // Reorg: block 17's revoke of token 3 is undone by a snapshot of block 16.
    let ops = p.step(&[revoked(3, 17, 0)]);
    assert_eq!(ops[0], Op::CloseSlot { slot: PeerSlot(4) });
    p.take_audit();
    assert_eq!(
        p.step(&[snapshot(3, 3, 34, true, 16, SnapshotCause::Reorg)]),
        vec![Op::AddWgPeer { key: key(34), slot: PeerSlot(4), allowed_ip: ip(4) }, Op::OpenSlot { slot: PeerSlot(4), generation: 6 }]
    );
    assert_eq!(p.take_audit(), vec![(Grant, Some(3), AccessReason::Granted, true)]);

    // At-least-once delivery: the whole log again changes nothing.
    let replay = [
        granted(1, 11, 10, 0),
        granted(2, 22, 11, 0),
        revoked(1, 12, 0),
        transferred(2, 9, 13, 0),
        key_updated(9, 23, 14, 0),
        snapshot(2, 9, 23, true, 14, SnapshotCause::KeyUpdated),
        granted(3, 33, 15, 0),
        key_updated(3, 34, 16, 0),
        snapshot(3, 3, 34, true, 16, SnapshotCause::KeyUpdated),
    ];
    let before = p.control.registry().clone();
    assert_eq!(p.step(&replay), vec![]);
    assert_eq!(p.control.registry().admitted(), before.admitted());
    assert_eq!(p.take_audit(), vec![], "a replay is not audited twice");

    // The RPC goes away: past the max age every peer is withdrawn, without
    // denying endpoints; back in sync, they return.
    p.now += MAX_AGE + 1;
    assert_eq!(
        p.step(&[ChainEvent::Unavailable { error: "connection refused".into() }]),
        vec![
            Op::CloseSlot { slot: PeerSlot(3) },
            Op::RemoveWgPeer { key: key(23), slot: PeerSlot(3) },
            Op::CloseSlot { slot: PeerSlot(4) },
            Op::RemoveWgPeer { key: key(34), slot: PeerSlot(4) },
        ]
    );
    assert_eq!(p.take_audit(), vec![(PolicyChange, None, AccessReason::ChainUnavailable, false)]);
    assert_eq!(p.step(&[synced(18)]).len(), 4);
    assert_eq!(p.take_audit(), vec![(PolicyChange, None, AccessReason::Granted, true)]);
}

#[test]
fn audit_records_carry_chain_provenance_and_no_secrets() {
    let mut p = Pipeline::new();
    p.step(&[granted(1, 11, 10, 3), synced(10), revoked(1, 12, 7)]);
    let lines: Vec<String> = p.audit.iter().map(|r| serde_json::to_string(r).unwrap()).collect();
    let revoke: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(revoke["action"], "revoke");
    assert_eq!(revoke["reason"], "revoked");
    assert_eq!(revoke["token_id"], 1);
    assert_eq!(revoke["node_id"], "node-1");
    assert_eq!(revoke["block_number"], 12);
    assert_eq!(revoke["tx_hash"], meta(12, 7).tx_hash.to_string());
    assert_eq!(revoke["public_key"], key_b64(11));
    for l in &lines {
        assert!(!l.to_lowercase().contains("private"), "{l}");
    }
}

#[test]
fn duplicate_key_promotion_moves_the_key_without_two_copies() {
    let mut p = Pipeline::new();
    p.step(&[synced(1), granted(3, 77, 10, 0), granted(5, 77, 11, 0)]);
    assert_eq!(p.control.applied().peers().count(), 1);
    p.control.on_endpoint(PeerSlot(4), ep(9));
    // Token 3 revoked: token 5 (same key) takes over; the key stays allowed,
    // so its endpoint is not denied, and it is removed before it is re-added.
    assert_eq!(
        p.step(&[revoked(3, 12, 0)]),
        vec![
            Op::CloseSlot { slot: PeerSlot(4) },
            Op::RemoveWgPeer { key: key(77), slot: PeerSlot(4) },
            Op::AddWgPeer { key: key(77), slot: PeerSlot(6), allowed_ip: ip(6) },
            Op::OpenSlot { slot: PeerSlot(6), generation: 2 },
        ]
    );
}

#[test]
fn a_half_applied_grant_is_completed() {
    let mut p = Pipeline::new();
    p.step(&[synced(1)]);
    let step = p.control.on_chain_events(&[granted(1, 11, 10, 0)], p.now, p.now_ns);
    // The executor added the peer but died before opening the slot.
    let failed = Some(FailedOp { index: 1, op: step.ops[1].clone(), error: "killed".into() });
    p.control.handle_applied(&Executed { applied: step.ops[..1].to_vec(), failed }, p.now);
    assert_eq!(p.replan(), vec![Op::OpenSlot { slot: PeerSlot(2), generation: 1 }]);
    assert_eq!(p.replan(), vec![]);
}

proptest! {
    #[test]
    fn plans_only_open_allowed_keys_in_order_and_converge(
        events in proptest::collection::vec(crate::registry::tests::arb_event(), 0..40),
        endpoints in proptest::collection::vec(any::<bool>(), 8),
    ) {
        let mut p = Pipeline::new();
        p.step(&[synced(0)]);
        for e in &events {
            let ops = p.step(std::slice::from_ref(e));
            let mut added: BTreeMap<PeerSlot, WgKey> = BTreeMap::new();
            let mut closed = std::collections::BTreeSet::new();
            let mut adding = false;
            for op in &ops {
                match op {
                    Op::AddWgPeer { key, slot, .. } => { added.insert(*slot, *key); adding = true; }
                    Op::OpenSlot { slot, .. } => {
                        let key = added.get(slot).copied().or_else(|| p.control.applied().peer(*slot).map(|a| a.key));
                        let key = key.expect("a slot is opened only for a peer that was added");
                        let d = p.check(&key);
                        prop_assert!(d.allowed && d.slot == Some(*slot), "opened {slot:?} for {d:?}");
                        adding = true;
                    }
                    Op::CloseSlot { slot } => { prop_assert!(!adding, "removals come first"); closed.insert(*slot); }
                    Op::DenyEndpoint { .. } => prop_assert!(!adding),
                    Op::RemoveWgPeer { slot, .. } => {
                        prop_assert!(!adding);
                        prop_assert!(closed.contains(slot), "XDP slot closed before the peer goes");
                    }
                    Op::LiftDeny { .. } => prop_assert!(adding),
                }
            }
            prop_assert_eq!(p.replan(), vec![], "a plan once applied leaves nothing to do");
            for (slot, has) in (2u32..10).zip(&endpoints) {
                if *has { p.control.on_endpoint(PeerSlot(slot), ep(slot as u8)); }
            }
        }
        let reg = p.control.registry();
        let granted: BTreeMap<PeerSlot, WgKey> = reg.admitted().into_iter().map(|(s, a)| (s, a.key)).collect();
        let applied: BTreeMap<PeerSlot, WgKey> = p.control.applied().peers().map(|a| (a.slot, a.key)).collect();
        prop_assert_eq!(applied, granted);
        for a in p.control.applied().peers() {
            prop_assert!(a.slot_open);
            prop_assert!(decide(reg, &a.key).allowed);
        }
    }
}

#[test]
fn a_failed_op_is_retried_by_the_next_plan() {
    let mut p = Pipeline::new();
    p.step(&[synced(1)]);
    let step = p.control.on_chain_events(&[granted(1, 11, 10, 0)], p.now, p.now_ns);
    // The data plane added the peer, then the XDP map update failed.
    let executed = execute(&step.ops, |op| if !matches!(op, Op::RemoveWgPeer { .. } | Op::AddWgPeer { .. }) { Err("map full") } else { Ok(()) });
    assert_eq!(executed.failed.as_ref().map(|f| f.index), Some(1));
    p.control.handle_applied(&executed, p.now);
    assert_eq!(p.replan(), vec![Op::OpenSlot { slot: PeerSlot(2), generation: 1 }]);
    assert_eq!(p.replan(), vec![]);
}

#[test]
fn a_rejected_handshake_denies_its_endpoint_until_the_key_is_granted() {
    let mut p = Pipeline::new();
    p.step(&[synced(1)]);
    p.take_audit();
    let stranger = key(50);
    let verdict = p.control.on_handshake(&stranger, ep(5), p.now, p.now_ns);
    assert_eq!(verdict.decision.reason, AccessReason::UnknownKey);
    let op = verdict.deny.expect("denied");
    assert_eq!(op, Op::DenyEndpoint { endpoint: ep(5), key: stranger, until_ns: p.now_ns + DENY_NS, reason: AccessReason::UnknownKey });
    p.run(Step { ops: vec![op], audit: verdict.audit.into_iter().collect(), persist: false });
    assert_eq!(p.take_audit(), vec![(AuditAction::RejectedHandshake, None, AccessReason::UnknownKey, false)]);

    // The key is minted later: the endpoint it was refused at is let in again.
    assert_eq!(
        p.step(&[granted(7, 50, 10, 0)]),
        vec![
            Op::AddWgPeer { key: stranger, slot: PeerSlot(8), allowed_ip: ip(8) },
            Op::OpenSlot { slot: PeerSlot(8), generation: 1 },
            Op::LiftDeny { endpoint: ep(5) },
        ]
    );

    // Refusals that are only the staleness policy's deny nothing.
    p.now += MAX_AGE + 1;
    let verdict = p.control.on_handshake(&stranger, ep(6), p.now, p.now_ns);
    assert_eq!((verdict.decision.reason, verdict.deny), (AccessReason::ChainUnavailable, None));
}

#[test]
fn a_full_slash_16_is_planned_whole_and_its_boundary_token_refused() {
    let net = crate::registry::Network { cidr: "10.9.0.0/16".parse().unwrap(), dns_server: ip(1) };
    let mut reg = crate::registry::Registry::new(CONTRACT, net);
    let last_admitted: u128 = 65_533; // host 65534; host 65535 is the broadcast address
    for t in 1..=last_admitted + 1 {
        // Byte 31 set: token 1's key would otherwise be the low-order point 1.
        let mut k = [0x40u8; 32];
        k[..16].copy_from_slice(&t.to_le_bytes());
        let e = ChainEvent::Granted {
            token_id: t,
            node_id: format!("n{t}"),
            owner: owner(1),
            public_key: WgKey(k).to_base64(),
            meta: meta(t as u64, 0),
        };
        reg.apply(&e, 100);
    }
    reg.apply(&synced(70_000), 100);
    assert_eq!(reg.view(last_admitted + 1).map(|v| v.reason), Some(AccessReason::NetworkFull));
    let d = desired(&reg, &Staleness::default(), 100);
    let ops = plan(&d, &Applied::default(), &PlanConfig::default(), 0);
    assert_eq!(ops.len(), 2 * 65_533);
    assert_eq!(
        ops.last(),
        Some(&Op::OpenSlot { slot: PeerSlot(65_534), generation: 65_533 }),
        "the last host's slot is inside the kernel's slot space"
    );
}

#[test]
fn deny_bookkeeping_is_pruned_and_bounded() {
    let mut applied = Applied::default();
    let deny = |n: u32, until_ns: u64| Op::DenyEndpoint {
        endpoint: SocketAddr::from(([198, 51, (n >> 8) as u8, n as u8], 1)),
        key: key(1),
        until_ns,
        reason: AccessReason::UnknownKey,
    };
    let cap = gateway_common::DENY_SLOTS;
    for n in 0..cap + 10 {
        applied.record(&deny(n % 65_535, 1_000 + u64::from(n)));
    }
    assert!(applied.denied_endpoints(0).count() <= cap as usize);
    applied.prune_denies(1_000 + u64::from(cap));
    assert_eq!(applied.denied_endpoints(0).count(), 9, "only denies expiring after now remain");
}

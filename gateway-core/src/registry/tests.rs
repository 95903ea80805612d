#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::chain::{Address, ChainEvent, SnapshotCause};
use crate::testing::*;

fn reason(reg: &Registry, t: u128) -> AccessReason {
    reg.view(t).expect("token known").reason
}

fn apply_all(reg: &mut Registry, events: &[ChainEvent], now: u64) {
    for e in events {
        reg.apply(e, now);
    }
}

#[test]
fn grant_places_the_token_at_host_id_plus_one() {
    let mut reg = registry();
    let out = reg.apply(&granted(1, 11, 10, 0), 100);
    assert_eq!(out.effect, Effect::Applied);
    let a = reg.view(1).and_then(|v| v.admission()).expect("admitted");
    assert_eq!((a.key, a.slot, a.tunnel_ip.to_string()), (key(11), PeerSlot(2), "10.88.0.2".to_string()));
    assert!(out.touched_keys.contains(&key(11)));
    assert_eq!(reg.admitted().len(), 1);
}

#[test]
fn revoke_transfer_and_rekey_remove_the_old_key_at_once() {
    let mut reg = registry();
    apply_all(&mut reg, &[granted(1, 11, 10, 0), granted(2, 22, 10, 1), granted(3, 33, 10, 2)], 100);

    reg.apply(&revoked(1, 11, 0), 101);
    assert_eq!(reason(&reg, 1), AccessReason::Revoked);

    reg.apply(&transferred(2, 9, 11, 1), 101);
    assert_eq!(reason(&reg, 2), AccessReason::UnboundAfterTransfer);
    assert!(matches!(reg.lookup(&key(22)), KeyLookup::Retired(retired) if retired.reason == AccessReason::UnboundAfterTransfer));

    // Owner 3 holds one token: the old key goes now, the new one comes with the snapshot.
    let out = reg.apply(&key_updated(3, 34, 12, 0), 102);
    assert_eq!(out.effect, Effect::Applied);
    assert_eq!(reason(&reg, 3), AccessReason::KeyRotated);
    assert!(matches!(reg.lookup(&key(33)), KeyLookup::Retired(retired) if retired.reason == AccessReason::KeyRotated));
    reg.apply(&snapshot(3, 3, 34, true, 12, SnapshotCause::KeyUpdated), 102);
    assert_eq!(reg.view(3).and_then(|v| v.admission()).map(|a| a.key), Some(key(34)));
    assert_eq!(reg.admitted().len(), 1);
}

#[test]
fn key_update_of_an_owner_with_several_tokens_waits_for_snapshots() {
    let mut reg = registry();
    let mut g2 = granted(2, 22, 10, 1);
    if let ChainEvent::Granted { owner: o, .. } = &mut g2 {
        *o = owner(1);
    }
    apply_all(&mut reg, &[granted(1, 11, 10, 0), g2], 100);
    let before: Vec<TokenView> = reg.views().collect();
    let out = reg.apply(&key_updated(1, 12, 11, 0), 101);
    assert_eq!(out.effect, Effect::AwaitingSnapshot);
    assert_eq!(reg.views().collect::<Vec<_>>(), before);

    // The re-read that binds the new key names the token: its audit record
    // carries the log's transaction, so the update is audited with its token.
    let other = reg.apply(&snapshot(1, 1, 11, true, 11, SnapshotCause::KeyUpdated), 102);
    assert_eq!(other.key_update, None, "token 1 kept its key");
    let read = snapshot(2, 1, 12, true, 11, SnapshotCause::KeyUpdated);
    let out = reg.apply(&read, 102);
    assert_eq!(out.key_update, Some(crate::registry::KeyUpdateLog { tx_hash: tx_hash(11, 0), block_number: 11 }));
    let records = crate::access::audit::records_for_event(&read, &out, 102);
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(
        (records[0].action, records[0].token_id, records[0].tx_hash, records[0].public_key.clone()),
        (crate::access::AuditAction::Rekey, Some(2), Some(tx_hash(11, 0)), Some(key_b64(12)))
    );
    assert_eq!(reg.apply(&read, 103).key_update, None, "completed once");
}

#[test]
fn replays_and_late_grants_are_ignored() {
    let mut reg = registry();
    apply_all(&mut reg, &[granted(1, 11, 10, 0), revoked(1, 12, 0)], 100);
    let settled = reg.clone();
    assert_eq!(reg.apply(&granted(1, 11, 10, 0), 200).effect, Effect::Stale);
    assert_eq!(reg.apply(&revoked(1, 12, 0), 200).effect, Effect::Stale);
    assert_eq!(reg, settled);

    // The revoke is delivered at first sight, the grant only after its
    // confirmations: the grant must not resurrect the token.
    let mut reg = registry();
    reg.apply(&revoked(5, 105, 0), 100);
    assert_eq!(reg.apply(&granted(5, 55, 100, 0), 100).effect, Effect::Stale);
    assert_eq!(reason(&reg, 5), AccessReason::Revoked);
    assert!(reg.admitted().is_empty());
}

#[test]
fn reorg_snapshot_replaces_even_an_older_block() {
    let mut reg = registry();
    apply_all(&mut reg, &[granted(1, 11, 10, 0), revoked(1, 12, 0)], 100);
    // Block 12 was reorged out; the token is active again at block 11.
    reg.apply(&snapshot(1, 1, 11, true, 11, SnapshotCause::Reorg), 101);
    assert_eq!(reason(&reg, 1), AccessReason::Granted);
    // A reconcile snapshot of an older block than the token holds is stale.
    reg.apply(&revoked(1, 13, 0), 102);
    assert_eq!(reg.apply(&snapshot(1, 1, 11, true, 12, SnapshotCause::Reconcile), 103).effect, Effect::Stale);
    assert_eq!(reason(&reg, 1), AccessReason::Revoked);
}

#[test]
fn duplicate_key_goes_to_the_lowest_live_token() {
    let mut reg = registry();
    apply_all(&mut reg, &[granted(5, 77, 10, 0), granted(3, 77, 11, 0)], 100);
    assert_eq!(reason(&reg, 3), AccessReason::Granted);
    assert_eq!(reason(&reg, 5), AccessReason::DuplicateKey);
    assert_eq!(reg.admitted().len(), 1);

    let out = reg.apply(&revoked(3, 12, 0), 101);
    assert_eq!(reason(&reg, 5), AccessReason::Granted);
    let ids: Vec<u128> = out.changes.iter().map(|c| c.after.token_id).collect();
    assert_eq!(ids, vec![3, 5], "the freed duplicate is reported as changed");
    assert!(out.changes[1].access_changed());
}

#[test]
fn malformed_chain_data_gets_a_reason_never_a_grant() {
    use base64::Engine as _;
    let short = base64::engine::general_purpose::STANDARD.encode([1u8; 31]);
    let mut reg = registry();
    apply_all(
        &mut reg,
        &[
            granted_raw(1, "node-1", "%%%not-base64", 10, 0),
            granted_raw(2, "node-2", &short, 10, 1),
            granted_raw(3, &"x".repeat(65), &key_b64(3), 10, 2),
            granted_raw(4, "node_4", &key_b64(4), 10, 3),
            granted_raw(5, "node-5", "", 10, 4),
            granted(0, 100, 10, 5),
            granted(254, 254, 10, 6),
            granted(253, 253, 10, 7),
        ],
        100,
    );
    let got: Vec<(u128, AccessReason)> = reg.views().map(|v| (v.token_id, v.reason)).collect();
    assert_eq!(
        got,
        vec![
            (0, AccessReason::ReservedAddress),
            (1, AccessReason::InvalidKey),
            (2, AccessReason::InvalidKey),
            (3, AccessReason::InvalidNodeId),
            (4, AccessReason::InvalidNodeId),
            (5, AccessReason::Unbound),
            (253, AccessReason::Granted),
            (254, AccessReason::NetworkFull),
        ]
    );
}

#[test]
fn transfer_to_the_zero_address_is_a_burn() {
    let mut reg = registry();
    reg.apply(&granted(1, 11, 10, 0), 100);
    reg.apply(
        &ChainEvent::Transferred { token_id: 1, from: owner(1), to: Address::ZERO, meta: meta(11, 0) },
        100,
    );
    assert_eq!(reason(&reg, 1), AccessReason::NoOwner);
}

#[test]
fn the_two_logs_of_one_transfer_are_applied_once() {
    let mut reg = registry();
    reg.apply(&granted(1, 11, 10, 0), 100);
    // ERC-721's Transfer, then NodeAccessTransferred, in one transaction.
    let transfer = ChainEvent::Transferred { token_id: 1, from: owner(1), to: owner(2), meta: meta(11, 0) };
    let ChainEvent::Transferred { meta: mut second_meta, .. } = transfer.clone() else { unreachable!() };
    second_meta.log_index = 1;
    let second = ChainEvent::Transferred { token_id: 1, from: owner(1), to: owner(2), meta: second_meta };
    assert_eq!(reg.apply(&transfer, 101).effect, Effect::Applied);
    assert_eq!(reg.apply(&second, 101).effect, Effect::Stale);
    assert_eq!(reason(&reg, 1), AccessReason::UnboundAfterTransfer);
    // A later transfer of the same token is not a replay.
    let back = ChainEvent::Transferred { token_id: 1, from: owner(2), to: owner(1), meta: meta(12, 0) };
    assert_eq!(reg.apply(&back, 102).effect, Effect::Applied);
}

#[test]
fn bad_node_ids_get_no_hostname() {
    let mut reg = registry();
    reg.apply(&granted_raw(1, "evil\nhost", &key_b64(1), 10, 0), 100);
    let doc = reg.to_document();
    assert_eq!((doc.peers[0].hostname.as_str(), doc.peers[0].instance_id.as_str()), ("", ""));
    assert_eq!(doc.peers[0].status, "invalid_node_id");
}

#[test]
fn events_for_unknown_tokens_never_grant() {
    let mut reg = registry();
    reg.apply(&transferred(7, 2, 10, 0), 100);
    assert_eq!(reason(&reg, 7), AccessReason::UnknownToken);
    reg.apply(&key_updated(2, 70, 11, 0), 100);
    assert!(reg.admitted().is_empty());
    reg.apply(&snapshot(7, 2, 70, true, 12, SnapshotCause::Reconcile), 100);
    assert_eq!(reason(&reg, 7), AccessReason::Granted);
}

#[test]
fn document_has_every_seed_field_and_round_trips() {
    let mut reg = registry();
    apply_all(&mut reg, &[granted(1, 11, 10, 0), granted(2, 22, 10, 1), transferred(2, 9, 11, 0), synced(11)], 1_736_179_200);
    let doc = reg.to_document();
    let json = serde_json::to_value(&doc).unwrap();
    assert_eq!(json["version"], "2.0");
    assert_eq!(json["network"]["cidr"], "10.88.0.0/24");
    assert_eq!(json["network"]["dns_server"], "10.88.0.1");
    assert_eq!(json["last_sync"], "2025-01-06T16:00:00Z");
    assert_eq!(json["cursor"]["block_number"], 11);
    let p = &json["peers"][0];
    for field in [
        "node_id", "public_key", "ip_address", "hostname", "instance_id", "nft_owner", "access_granted", "token_id",
        "last_verified", "status",
    ] {
        assert!(p.get(field).is_some(), "missing seed field {field}");
    }
    assert_eq!(p["hostname"], "node-1.vpn.dstack");
    assert_eq!(p["instance_id"], "dstack-node-1");
    assert_eq!(p["ip_address"], "10.88.0.2");
    assert_eq!(p["status"], "active");
    assert_eq!(p["access_granted"], true);
    assert_eq!(json["peers"][1]["status"], "unbound_after_transfer");
    assert_eq!(json["peers"][1]["access_granted"], false);

    let back = Registry::from_document(doc, CONTRACT, network()).unwrap();
    assert_eq!(back, reg);

    let renamed = reg.with_domain("corp.example").to_document();
    assert_eq!(renamed.peers[0].hostname, "node-1.corp.example");
}

#[test]
fn a_registry_written_by_the_seed_loads_and_yields_to_the_chain() {
    let seed = serde_json::json!({
        "peers": [{
            "node_id": "node-a",
            "public_key": key_b64(1),
            "ip_address": "10.0.0.1",
            "hostname": "node-a.vpn.dstack",
            "instance_id": "dstack-node-a",
            "nft_owner": owner(1),
            "access_granted": true,
            "token_id": "1",
            "last_verified": "2025-01-06T16:00:00.000Z",
            "status": "active",
            "created_at": "2025-01-06T15:00:00.000Z"
        }],
        // Checksummed, as the seed's operators copy it from a block explorer.
        "contract_address": "0x37d2106bADB01dd5bE1926e45D172Cb4203C4186",
        "network": {"cidr": "10.88.0.0/24", "dns_server": "10.88.0.1"},
        "last_sync": "2025-01-06T16:00:00Z",
        "version": "2.0"
    });
    let doc: RegistryDocument = serde_json::from_value(seed).unwrap();
    let mut reg = Registry::from_document(doc, CONTRACT, network()).unwrap();
    // The seed's own address for the node is replaced by the derived one.
    assert_eq!(reg.admitted().get(&PeerSlot(2)).map(|a| a.key), Some(key(1)));
    reg.apply(&revoked(1, 1, 0), 100);
    assert!(reg.admitted().is_empty());
}

#[test]
fn huge_token_ids_survive_the_document() {
    let mut reg = registry();
    reg.apply(&granted(u128::MAX, 1, 1, 0), 100);
    let json = serde_json::to_string(&reg.to_document()).unwrap();
    assert!(json.contains(&format!("\"token_id\":\"{}\"", u128::MAX)), "{json}");
    let back = Registry::from_document(serde_json::from_str(&json).unwrap(), CONTRACT, network()).unwrap();
    assert_eq!(back, reg);
    assert_eq!(back.view(u128::MAX).map(|v| v.reason), Some(AccessReason::NetworkFull));
}

#[test]
fn retired_keys_survive_the_json_file() {
    // Regression (found seeding the registry fuzz target): a flattened retired
    // entry made every file with a retired key fail to load.
    let mut reg = registry();
    for event in [granted(1, 11, 10, 0), transferred(1, 2, 11, 0), granted(u128::MAX, 12, 12, 0), synced(12)] {
        reg.apply(&event, 100);
    }
    reg.apply(&key_updated(1, 13, 13, 0), 100);
    assert!(!reg.to_document().retired_keys.is_empty(), "the transfer retired a key");
    let json = serde_json::to_string(&reg.to_document()).unwrap();
    let back = Registry::from_document(serde_json::from_str(&json).unwrap(), CONTRACT, network()).unwrap();
    assert_eq!(back, reg, "{json}");
}

/// A small alphabet of events over few tokens, keys and owners, so that
/// collisions (duplicate keys, replays, out-of-order blocks) are frequent.
pub(crate) fn arb_event() -> impl Strategy<Value = ChainEvent> {
    let t = 1u128..6;
    let k = 1u8..5;
    let b = 1u64..20;
    let cause = prop_oneof![
        Just(SnapshotCause::Reconcile),
        Just(SnapshotCause::Reorg),
        Just(SnapshotCause::KeyUpdated),
        Just(SnapshotCause::Backfill)
    ];
    prop_oneof![
        (t.clone(), k.clone(), b.clone(), 0u64..3).prop_map(|(t, k, b, i)| granted(t, k, b, i)),
        (t.clone(), b.clone(), 0u64..3).prop_map(|(t, b, i)| revoked(t, b, i)),
        (t.clone(), 1u8..6, b.clone(), 0u64..3).prop_map(|(t, o, b, i)| transferred(t, o, b, i)),
        (1u8..6, k.clone(), b.clone(), 0u64..3).prop_map(|(o, k, b, i)| key_updated(o, k, b, i)),
        (t, 1u8..6, 0u8..5, any::<bool>(), b.clone(), cause)
            .prop_map(|(t, o, k, a, b, c)| snapshot(t, o, k, a, b, c)),
        b.prop_map(synced),
    ]
}

/// Where the follower would deliver an event in chain order.
fn chain_order(e: &ChainEvent) -> (u64, u64) {
    match e {
        ChainEvent::Granted { meta, .. }
        | ChainEvent::Revoked { meta, .. }
        | ChainEvent::Transferred { meta, .. }
        | ChainEvent::KeyUpdated { meta, .. } => (meta.block_number, meta.log_index),
        ChainEvent::Snapshot { snapshot, .. } => (snapshot.block_number, u64::MAX),
        ChainEvent::Synced { block_number, .. } => (*block_number, u64::MAX),
        ChainEvent::Unavailable { .. } | ChainEvent::EndpointChecked { .. } => (0, 0),
    }
}

fn same_tokens(a: &Registry, b: &Registry) -> Result<(), TestCaseError> {
    prop_assert_eq!(&a.tokens, &b.tokens);
    prop_assert_eq!(&a.by_key, &b.by_key);
    prop_assert_eq!(a.views().collect::<Vec<_>>(), b.views().collect::<Vec<_>>());
    Ok(())
}

fn apply_twice(events: &[ChainEvent]) -> (Registry, Registry) {
    let mut once = registry();
    apply_all(&mut once, events, 1000);
    let mut twice = once.clone();
    apply_all(&mut twice, events, 1000);
    (once, twice)
}

fn is_reorg(e: &ChainEvent) -> bool {
    matches!(e, ChainEvent::Snapshot { cause: SnapshotCause::Reorg, .. })
}

// What is promised about replays (at-least-once delivery of logs):
// - any order, events that name their token (reorg snapshots included):
//   every token unchanged;
// - chain order, `KeyUpdated` included, no reorg snapshot: the whole
//   registry unchanged.
// A reorg snapshot overrides positions by design, so it is a state read the
// follower takes when it detects the reorg, never something it replays
// (see the module doc of `state`).
/// Chain order without the impossible: one log per position, one state per
/// token and block.
fn realistic(mut events: Vec<ChainEvent>) -> Vec<ChainEvent> {
    events.sort_by_key(chain_order);
    let mut seen = std::collections::BTreeSet::new();
    events.retain(|e| {
        let id = match e {
            ChainEvent::Snapshot { snapshot, .. } => (snapshot.token_id, snapshot.block_number, u64::MAX),
            ChainEvent::Synced { .. } | ChainEvent::Unavailable { .. } | ChainEvent::EndpointChecked { .. } => return true,
            _ => {
                let (b, i) = chain_order(e);
                (u128::MAX, b, i)
            }
        };
        seen.insert(id)
    });
    events
}

proptest! {
    #[test]
    fn replay_in_any_order_leaves_tokens_unchanged(
        events in proptest::collection::vec(arb_event().prop_filter("names a token", |e| !matches!(e, ChainEvent::KeyUpdated { .. })), 0..30)
    ) {
        let (once, twice) = apply_twice(&events);
        same_tokens(&once, &twice)?;
    }

    #[test]
    fn replay_without_reorg_changes_nothing_at_all(
        events in proptest::collection::vec(arb_event().prop_filter("no reorg", |e| !is_reorg(e)), 0..30)
    ) {
        let events = realistic(events);
        let (once, twice) = apply_twice(&events);
        prop_assert_eq!(twice, once);
    }

    #[test]
    fn a_granted_key_is_always_bound_to_its_live_token(events in proptest::collection::vec(arb_event(), 0..30)) {
        let mut reg = registry();
        apply_all(&mut reg, &events, 1000);
        let admitted = reg.admitted();
        let mut keys = std::collections::BTreeSet::new();
        for a in admitted.values() {
            let rec = reg.record(a.token_id).expect("record");
            prop_assert!(rec.is_active && rec.owner.is_some());
            prop_assert_eq!(WgKey::parse(&rec.public_key).ok(), Some(a.key));
            prop_assert!(keys.insert(a.key), "one key, one slot");
        }
    }

    #[test]
    fn document_round_trip_is_lossless(events in proptest::collection::vec(arb_event(), 0..30)) {
        let mut reg = registry();
        apply_all(&mut reg, &events, 1000);
        let back = Registry::from_document(reg.to_document(), CONTRACT, network()).expect("load");
        prop_assert_eq!(back, reg);
    }
}

/// A deliberately naive model of the access rules: a chain-ordered stream
/// folded exactly once, no positions, no indexes. The registry fed the same logs
/// with at-least-once replays mixed in must admit exactly what it admits.
fn model_admitted(events: &[ChainEvent]) -> BTreeMap<PeerSlot, WgKey> {
    struct Tok {
        active: bool,
        owner: Option<Address>,
        key: String,
        node: String,
    }
    let mut toks: BTreeMap<u128, Tok> = BTreeMap::new();
    for e in events {
        match e {
            ChainEvent::Granted { token_id, node_id, owner, public_key, .. } => {
                toks.insert(
                    *token_id,
                    Tok { active: true, owner: Some(*owner), key: public_key.clone(), node: node_id.clone() },
                );
            }
            // A token first seen through a revoke or transfer is not admitted,
            // but it is someone's token (it counts for a rekey's owner).
            ChainEvent::Revoked { token_id, .. } => {
                let t = toks.entry(*token_id).or_insert(Tok { active: false, owner: None, key: String::new(), node: String::new() });
                t.active = false;
            }
            ChainEvent::Transferred { token_id, to, .. } => {
                let t = toks.entry(*token_id).or_insert(Tok { active: false, owner: None, key: String::new(), node: String::new() });
                t.owner = Some(*to);
                t.key.clear();
            }
            ChainEvent::KeyUpdated { owner, public_key, .. } => {
                let owned: Vec<u128> =
                    toks.iter().filter(|(_, t)| t.owner == Some(*owner)).map(|(id, _)| *id).collect();
                if let [only] = owned[..] {
                    if let Some(t) = toks.get_mut(&only).filter(|t| t.key != *public_key) {
                        t.key.clear();
                    }
                }
            }
            ChainEvent::Snapshot { snapshot: s, .. } => {
                toks.insert(
                    s.token_id,
                    Tok { active: s.is_active, owner: s.owner, key: s.public_key.clone(), node: s.node_id.clone() },
                );
            }
            _ => {}
        }
    }
    let mut taken = std::collections::BTreeSet::new();
    let mut out = BTreeMap::new();
    for (id, t) in &toks {
        let Ok(key) = WgKey::parse(&t.key) else { continue };
        let Ok(place) = network().place(*id) else { continue };
        if t.active && t.owner.is_some() && key::validate_node_id(&t.node).is_ok() && taken.insert(key) {
            out.insert(place.slot, key);
        }
    }
    out
}

/// A chain-ordered stream with unique positions: logs and (non-reorg)
/// snapshots, each snapshot after every log of its block.
fn arb_log_stream() -> impl Strategy<Value = Vec<ChainEvent>> {
    proptest::collection::vec(arb_event().prop_filter("no reorg", |e| !is_reorg(e)), 0..30).prop_map(realistic)
}

proptest! {
    #[test]
    fn at_least_once_delivery_admits_what_exactly_once_does(
        events in arb_log_stream(),
        replays in proptest::collection::vec((any::<proptest::sample::Index>(), any::<proptest::sample::Index>()), 0..20),
    ) {
        // Each replay re-sends an event already delivered, at a later point.
        let mut delivered: Vec<ChainEvent> = Vec::new();
        let mut replays_at: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        if !events.is_empty() {
            for (at, which) in &replays {
                let at = at.index(events.len());
                replays_at.entry(at).or_default().push(which.index(at + 1));
            }
        }
        for (i, e) in events.iter().enumerate() {
            delivered.push(e.clone());
            for r in replays_at.get(&i).into_iter().flatten() {
                delivered.push(events[*r].clone());
            }
        }
        let mut reg = registry();
        apply_all(&mut reg, &delivered, 1000);
        let got: BTreeMap<PeerSlot, WgKey> = reg.admitted().into_iter().map(|(s, a)| (s, a.key)).collect();
        prop_assert_eq!(got, model_admitted(&events));
    }
}

#[test]
fn a_64_byte_node_id_is_granted_but_gets_no_hostname() {
    // The contract allows 64 bytes; a DNS label stops at 63.
    assert_eq!(super::document::hostname(&"a".repeat(63), "vpn.dstack").len(), 63 + 11);
    assert_eq!(super::document::hostname(&"a".repeat(64), "vpn.dstack"), "");
}

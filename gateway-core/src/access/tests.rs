#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::chain::SnapshotCause;
use crate::testing::*;

fn fresh_access() -> Access {
    Access::new(AccessConfig {
        staleness: Staleness { max_age_secs: 60, policy: StalePolicy::FailClosed },
        ..AccessConfig::default()
    })
}

/// Applies events the way the daemon must: registry, then cache invalidation.
fn feed(reg: &mut Registry, access: &mut Access, events: &[crate::chain::ChainEvent], now: u64) {
    for e in events {
        let out = reg.apply(e, now);
        access.invalidate(&out);
    }
}

#[test]
fn every_reason_is_reported_with_its_token() {
    let mut reg = registry();
    let mut access = fresh_access();
    feed(
        &mut reg,
        &mut access,
        &[
            granted(1, 11, 10, 0),
            granted(2, 22, 10, 1),
            granted(3, 33, 10, 2),
            granted(4, 44, 10, 3),
            revoked(2, 11, 0),
            transferred(3, 9, 11, 1),
            key_updated(4, 45, 12, 0),
            synced(12),
        ],
        100,
    );
    let cases = [
        (key(11), true, AccessReason::Granted, Some(1)),
        (key(22), false, AccessReason::Revoked, Some(2)),
        (key(33), false, AccessReason::UnboundAfterTransfer, Some(3)),
        (key(44), false, AccessReason::KeyRotated, Some(4)),
        (key(99), false, AccessReason::UnknownKey, None),
    ];
    for (k, allowed, reason, token) in cases {
        let d = access.check(&reg, &k, 100);
        assert_eq!((d.allowed, d.reason, d.token_id), (allowed, reason, token), "{k}");
    }
    let d = access.check(&reg, &key(11), 100);
    assert_eq!(d.node_id.as_deref(), Some("node-1"));
    assert_eq!(d.owner, Some(owner(1)));
    assert_eq!(d.tunnel_ip.map(|ip| ip.to_string()).as_deref(), Some("10.88.0.2"));
    assert_eq!(access.check_str(&reg, "garbage", 100).reason, AccessReason::InvalidKey);
}

#[test]
fn events_invalidate_cached_allow_and_deny_entries() {
    let mut reg = registry();
    let mut access = fresh_access();
    feed(&mut reg, &mut access, &[granted(1, 11, 10, 0), synced(10)], 100);
    assert!(access.check(&reg, &key(11), 100).allowed);
    assert!(!access.check(&reg, &key(12), 100).allowed);

    // Without invalidation the cache would keep answering "allowed".
    let out = reg.apply(&revoked(1, 11, 0), 100);
    assert!(access.check(&reg, &key(11), 100).allowed, "the cache really caches");
    access.invalidate(&out);
    assert_eq!(access.check(&reg, &key(11), 100).reason, AccessReason::Revoked);

    // A cached deny turns into an allow when the key gets bound.
    feed(&mut reg, &mut access, &[snapshot(1, 1, 12, true, 12, SnapshotCause::Reconcile)], 100);
    assert!(access.check(&reg, &key(12), 100).allowed);
    assert_eq!(access.check(&reg, &key(11), 100).reason, AccessReason::KeyRotated);
}

#[test]
fn the_maximum_age_is_a_safety_net_counted_in_now() {
    let mut reg = registry();
    let mut access = Access::new(AccessConfig { cache_max_age_secs: 5, ..AccessConfig::default() });
    feed(&mut reg, &mut access, &[granted(1, 11, 10, 0), synced(10)], 100);
    assert!(access.check(&reg, &key(11), 100).allowed);
    reg.apply(&revoked(1, 11, 0), 100); // deliberately not invalidated
    assert!(access.check(&reg, &key(11), 105).allowed, "still within its age: the cache answers");
    assert!(!access.check(&reg, &key(11), 106).allowed, "past it: decided afresh");
}

#[test]
fn capacity_drops_the_oldest_decision() {
    let mut reg = registry();
    let mut access = Access::new(AccessConfig { cache_capacity: 3, ..AccessConfig::default() });
    feed(&mut reg, &mut access, &[synced(1)], 100);
    for n in 1..=5 {
        let _ = access.check(&reg, &key(n), 100);
    }
    assert_eq!(access.cached(), 3);
    assert_eq!(access.cache_counts(), (0, 5));
    let _ = access.check(&reg, &key(5), 100);
    assert_eq!(access.cache_counts(), (1, 5), "the newest stays");
    let _ = access.check(&reg, &key(1), 100);
    assert_eq!(access.cache_counts(), (1, 6), "the oldest went");
}

#[test]
fn stale_chain_state_fails_closed_and_recovers() {
    let mut reg = registry();
    let mut access = fresh_access();
    feed(&mut reg, &mut access, &[granted(1, 11, 10, 0)], 100);
    assert_eq!(access.check(&reg, &key(11), 100).reason, AccessReason::ChainUnavailable, "never synced");
    feed(&mut reg, &mut access, &[synced(10)], 100);
    assert!(access.check(&reg, &key(11), 160).allowed);
    assert_eq!(access.check(&reg, &key(11), 161).reason, AccessReason::ChainUnavailable);
    let mut open = Access::new(AccessConfig {
        staleness: Staleness { max_age_secs: 60, policy: StalePolicy::FailOpen },
        ..AccessConfig::default()
    });
    assert!(open.check(&reg, &key(11), 10_000).allowed, "fail open serves the last state however old");
}

proptest::proptest! {
    /// The cached answer always equals a fresh decision, whatever happened.
    #[test]
    fn cache_never_disagrees_with_the_registry(
        events in proptest::collection::vec(crate::registry::tests::arb_event(), 0..30),
        probes in proptest::collection::vec(1u8..5, 1..8),
    ) {
        let mut reg = registry();
        let mut access = fresh_access();
        for e in &events {
            let out = reg.apply(e, 1000);
            access.invalidate(&out);
            for p in &probes {
                let cached = access.check(&reg, &key(*p), 1000);
                let fresh = Staleness { max_age_secs: 60, policy: StalePolicy::FailClosed }
                    .apply(decide(&reg, &key(*p)), reg.last_sync(), 1000);
                proptest::prop_assert_eq!(cached, fresh);
            }
        }
    }
}

/// Every spelling of a low-order Curve25519 point, bound to a token, is
/// `invalid_key`: in the registry, in `/v1/access` (with the token that
/// bound it, 403) and in the audit record of the grant (with why).
#[test]
fn low_order_keys_are_invalid_with_their_token_and_the_reason_logged() {
    use base64::Engine as _;
    let weak = crate::registry::low_order_encodings();
    for (i, bytes) in weak.iter().enumerate() {
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        let token = 1 + i as u128;
        let mut reg = registry();
        let mut access = fresh_access();
        let event = granted_raw(token, "node-weak", &text, 10, 0);
        let out = reg.apply(&event, 100);
        access.invalidate(&out);
        feed(&mut reg, &mut access, &[synced(10)], 100);
        assert_eq!(reg.view(token).map(|v| v.reason), Some(AccessReason::InvalidKey), "{text}");
        assert!(reg.admitted().is_empty(), "{text}");

        let d = access.check_str(&reg, &text, 100);
        assert_eq!((d.allowed, d.reason, d.token_id), (false, AccessReason::InvalidKey, Some(token)), "{text}");
        assert_eq!(d.http_status(), 403, "{text}");

        let records = audit::records_for_event(&event, &out, 100);
        assert_eq!(records.len(), 1, "{text}");
        let r = &records[0];
        assert_eq!((r.action, r.reason, r.access), (AuditAction::Grant, AccessReason::InvalidKey, false), "{text}");
        assert_eq!(r.public_key.as_deref(), Some(text.as_str()));
        assert!(r.detail.as_deref().is_some_and(|d| d.contains("low-order")), "{:?}", r.detail);
    }
    // Not bound to any token: still invalid, never "unknown".
    let reg = registry();
    let zero = base64::engine::general_purpose::STANDARD.encode([0u8; 32]);
    let d = decide_str(&reg, &zero);
    assert_eq!((d.reason, d.http_status()), (AccessReason::InvalidKey, 400));
}

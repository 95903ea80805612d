//! The follower against a real anvil: each contract action arrives as the
//! right `ChainEvent`, with its provenance, and the contract enforces its rules.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use alloy::primitives::U256;
use gateway_core::chain::{Address, ChainEvent, SnapshotCause};
use gateway::chain::follower::StartState;
use gateway_tests::anvil::{spawn_follower, test_key, wait_for, TestChain};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn mint_is_a_grant_with_tx_hash_and_block_and_revoke_follows() {
    let chain = TestChain::start(&[]).await;
    let (mut events, _task) = spawn_follower(chain.follower_config(vec![chain.http_url()]), StartState::default());
    let owner = chain.address(1);

    let minted = chain.admin.mint(chain.contract, owner, "node-a", &test_key(1), "").await.unwrap();
    let (granted, _) = wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Granted { .. })).await;
    let ChainEvent::Granted { token_id, node_id, owner: granted_owner, public_key, meta } = granted else {
        unreachable!()
    };
    assert_eq!(token_id, minted.token_id);
    assert_eq!(node_id, "node-a");
    assert_eq!(granted_owner, Address::from(owner));
    assert_eq!(public_key, test_key(1));
    assert_eq!(meta.tx_hash.to_string(), minted.tx.tx_hash);
    assert_eq!(meta.block_number, minted.tx.block_number);
    wait_for(&mut events, WAIT, |e| {
        matches!(e, ChainEvent::Synced { block_number, .. } if *block_number >= minted.tx.block_number)
    })
    .await;

    let revoked = chain.admin.revoke(chain.contract, U256::from(token_id)).await.unwrap();
    let receipt_seen = std::time::Instant::now();
    let (event, _) = wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Revoked { .. })).await;
    eprintln!("Revoked delivered {:?} after the receipt (HTTP polling every 50 ms)", receipt_seen.elapsed());
    let ChainEvent::Revoked { token_id: revoked_id, node_id, meta } = event else { unreachable!() };
    assert_eq!((revoked_id, node_id.as_str()), (token_id, "node-a"));
    assert_eq!(meta.tx_hash.to_string(), revoked.tx_hash);
    assert_eq!(meta.block_number, revoked.block_number);
}

#[tokio::test]
async fn transfer_unbinds_the_key_until_the_new_owner_binds_one() {
    let chain = TestChain::start(&[]).await;
    let (mut events, _task) = spawn_follower(chain.follower_config(vec![chain.http_url()]), StartState::default());
    let (alice, bob) = (chain.address(1), chain.address(2));
    let minted = chain.admin.mint(chain.contract, alice, "node-t", &test_key(10), "").await.unwrap();
    wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Granted { .. })).await;

    let alice_session = chain.session(1).await;
    let id = U256::from(minted.token_id);
    alice_session.transfer(chain.contract, id, bob).await.unwrap();
    let (event, _) = wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Transferred { .. })).await;
    assert!(
        matches!(&event, ChainEvent::Transferred { token_id, from, to, .. }
            if *token_id == minted.token_id && *from == Address::from(alice) && *to == Address::from(bob)),
        "{event:?}"
    );
    // Then the token read back, once for the transfer's two logs.
    // (A second read-back would be the next snapshot below, not the rekey's.)
    let (read_back, _) = wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Snapshot { .. })).await;
    assert!(
        matches!(&read_back, ChainEvent::Snapshot { snapshot, cause: SnapshotCause::Reconcile }
            if snapshot.token_id == minted.token_id && snapshot.public_key.is_empty() && snapshot.owner == Some(Address::from(bob))),
        "{read_back:?}"
    );
    let info = chain.admin.info(chain.contract, id).await.unwrap();
    assert_eq!(info.snapshot.public_key, "", "the old owner's key must be unbound");
    assert_eq!(info.snapshot.owner, Some(Address::from(bob)));
    assert!(info.snapshot.is_active);

    // The old owner can no longer bind a key; the new owner can.
    let refused = alice_session.rekey(chain.contract, id, &test_key(11)).await.unwrap_err();
    assert!(format!("{refused:#}").contains("caller does not own the token"), "{refused:#}");
    chain.session(2).await.rekey(chain.contract, id, &test_key(12)).await.unwrap();
    let (snapshot, seen) = wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Snapshot { .. })).await;
    assert!(seen.iter().any(|e| matches!(e, ChainEvent::KeyUpdated { owner, .. } if *owner == Address::from(bob))));
    let ChainEvent::Snapshot { snapshot, cause } = snapshot else { unreachable!() };
    assert_eq!(cause, SnapshotCause::KeyUpdated);
    assert_eq!(snapshot.token_id, minted.token_id);
    assert_eq!(snapshot.public_key, test_key(12));
    assert_eq!(snapshot.owner, Some(Address::from(bob)));
}

#[tokio::test]
async fn rekey_replaces_the_key_and_frees_the_old_one() {
    let chain = TestChain::start(&[]).await;
    let (mut events, _task) = spawn_follower(chain.follower_config(vec![chain.http_url()]), StartState::default());
    let alice = chain.address(1);
    let minted = chain.admin.mint(chain.contract, alice, "node-r", &test_key(20), "").await.unwrap();
    wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Granted { .. })).await;

    let rekeyed = chain.session(1).await.rekey(chain.contract, U256::from(minted.token_id), &test_key(21)).await.unwrap();
    let (event, _) = wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::KeyUpdated { .. })).await;
    assert!(
        matches!(&event, ChainEvent::KeyUpdated { owner, public_key, meta }
            if *owner == Address::from(alice) && *public_key == test_key(21) && meta.tx_hash.to_string() == rekeyed.tx_hash),
        "{event:?}"
    );
    let (event, _) = wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Snapshot { .. })).await;
    assert!(
        matches!(&event, ChainEvent::Snapshot { snapshot, cause: SnapshotCause::KeyUpdated }
            if snapshot.token_id == minted.token_id && snapshot.public_key == test_key(21) && snapshot.is_active),
        "{event:?}"
    );
    // The replaced key is free again for another node; the new one is taken.
    chain.admin.mint(chain.contract, alice, "node-r2", &test_key(20), "").await.unwrap();
    let taken = chain.admin.mint(chain.contract, alice, "node-r3", &test_key(21), "").await.unwrap_err();
    assert!(format!("{taken:#}").contains("already bound to an active token"), "{taken:#}");
}

#[tokio::test]
async fn grants_wait_for_confirmations_while_revocations_act_at_once() {
    let chain = TestChain::start(&[]).await;
    let mut config = chain.follower_config(vec![chain.http_url()]);
    config.confirmations = 3;
    let (mut events, _task) = spawn_follower(config, StartState::default());
    let owner = chain.address(1);

    let first = chain.admin.mint(chain.contract, owner, "node-c1", &test_key(30), "").await.unwrap();
    // Synced stops short of the held grant: a restart would find it again.
    let (synced, seen) = wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Synced { .. })).await;
    assert!(
        matches!(synced, ChainEvent::Synced { block_number, .. } if block_number < first.tx.block_number),
        "{synced:?}"
    );
    assert!(!seen.iter().any(|e| matches!(e, ChainEvent::Granted { .. })), "granted too early: {seen:?}");

    // A second grant, revoked before it is confirmed: the revocation goes out at
    // once and the grant is never replayed as a grant.
    let second = chain.admin.mint(chain.contract, owner, "node-c2", &test_key(31), "").await.unwrap();
    chain.admin.revoke(chain.contract, U256::from(second.token_id)).await.unwrap();
    let (_, seen) = wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Revoked { .. })).await;
    assert!(
        seen.iter().any(|e| matches!(e, ChainEvent::Granted { token_id, .. } if *token_id == first.token_id)),
        "the first grant has 3 confirmations once the second mint and the revoke are mined: {seen:?}"
    );

    chain.mine(3).await;
    let head = chain.head().await;
    let (_, seen) = wait_for(&mut events, WAIT, |e| {
        matches!(e, ChainEvent::Synced { block_number, .. } if *block_number >= head)
    })
    .await;
    assert!(!seen.iter().any(|e| matches!(e, ChainEvent::Granted { token_id, .. } if *token_id == second.token_id)));
    assert!(
        seen.iter().any(|e| matches!(e, ChainEvent::Snapshot { snapshot, .. }
            if snapshot.token_id == second.token_id && !snapshot.is_active)),
        "the touched grant is re-read instead: {seen:?}"
    );
}

#[tokio::test]
async fn websocket_endpoint_follows_live_blocks() {
    let chain = TestChain::start(&[]).await;
    let mut config = chain.follower_config(vec![chain.ws_url()]);
    // Long enough that only the new-heads subscription can deliver the grant in time.
    config.poll_interval = Duration::from_secs(20);
    let (mut events, _task) = spawn_follower(config, StartState::default());
    // The follower subscribes before its first catch-up, so this Synced means it is listening.
    wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Synced { .. })).await;

    let minted = chain.admin.mint(chain.contract, chain.address(3), "node-ws", &test_key(40), "").await.unwrap();
    let receipt_seen = std::time::Instant::now();
    let (event, _) = wait_for(&mut events, Duration::from_secs(10), |e| matches!(e, ChainEvent::Granted { .. })).await;
    eprintln!("Granted delivered {:?} after the receipt (WebSocket new heads)", receipt_seen.elapsed());
    assert!(matches!(event, ChainEvent::Granted { token_id, .. } if token_id == minted.token_id));
}

#[tokio::test]
async fn contract_validates_input_and_reverts_with_reasons() {
    let chain = TestChain::start(&[]).await;
    let alice = chain.address(1);
    let expect_revert = |result: anyhow::Result<gateway::node::admin::Minted>, reason: &str| {
        let err = format!("{:#}", result.expect_err("should revert"));
        assert!(err.contains(reason), "expected {reason:?} in {err:?}");
    };
    expect_revert(chain.admin.mint(chain.contract, alice, "n1", "AAAA", "").await, "44 characters of base64");
    let not_base64 = format!("{}*=", &test_key(1)[..42]);
    expect_revert(chain.admin.mint(chain.contract, alice, "n1", &not_base64, "").await, "not base64");
    let mut sloppy = test_key(1).into_bytes();
    sloppy[42] = b'B';
    let sloppy = String::from_utf8(sloppy).unwrap();
    expect_revert(chain.admin.mint(chain.contract, alice, "n1", &sloppy, "").await, "not canonical");
    expect_revert(chain.admin.mint(chain.contract, alice, "", &test_key(1), "").await, "node id is empty");
    expect_revert(chain.admin.mint(chain.contract, alice, "bad id", &test_key(1), "").await, "letters, digits");
    expect_revert(chain.admin.mint(chain.contract, alice, &"x".repeat(64), &test_key(1), "").await, "longer than 63");

    chain.admin.mint(chain.contract, alice, "n1", &test_key(1), "").await.unwrap();
    expect_revert(chain.admin.mint(chain.contract, alice, "n1", &test_key(2), "").await, "node id already has an active token");
    expect_revert(chain.admin.mint(chain.contract, alice, "n2", &test_key(1), "").await, "already bound to an active token");
    let outsider = chain.session(1).await;
    expect_revert(outsider.mint(chain.contract, alice, "n3", &test_key(3), "").await, "OwnableUnauthorizedAccount");

    // Revocation frees both the node id and the key.
    chain.admin.revoke(chain.contract, U256::from(1)).await.unwrap();
    let again = chain.admin.mint(chain.contract, alice, "n1", &test_key(1), "").await.unwrap();
    assert_eq!(again.token_id, 2);
    assert_eq!(chain.admin.token_id_of_node(chain.contract, "n1").await.unwrap(), U256::from(2));
}

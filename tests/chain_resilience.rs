//! The follower when the chain or the RPC misbehaves, against a real anvil:
//! a reorg undoes a grant, and a second RPC endpoint takes over from a dead one.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use alloy::primitives::U256;
use alloy::providers::Provider;
use gateway_core::chain::{ChainEvent, SnapshotCause};
use gateway::chain::follower::StartState;
use gateway_tests::anvil::{spawn_follower, test_key, wait_for, TestChain};
use gateway_tests::proxy::TcpProxy;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_reorg_undoes_a_grant() {
    let chain = TestChain::start(&[]).await;
    let (mut events, _task) = spawn_follower(chain.follower_config(vec![chain.http_url()]), StartState::default());
    let provider = chain.admin.provider().clone();
    wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Synced { .. })).await;

    let snapshot_id: U256 = provider.raw_request("evm_snapshot".into(), ()).await.unwrap();
    let minted = chain.admin.mint(chain.contract, chain.address(1), "node-reorg", &test_key(1), "").await.unwrap();
    let (event, _) = wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Granted { .. })).await;
    assert!(matches!(event, ChainEvent::Granted { token_id, .. } if token_id == minted.token_id));
    wait_for(&mut events, WAIT, |e| {
        matches!(e, ChainEvent::Synced { block_number, .. } if *block_number >= minted.tx.block_number)
    })
    .await;

    // Replace the mint's block with a longer branch that does not contain it.
    let reverted: bool = provider.raw_request("evm_revert".into(), (snapshot_id,)).await.unwrap();
    assert!(reverted);
    chain.mine(2).await;

    let (event, seen) = wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Snapshot { .. })).await;
    let ChainEvent::Snapshot { snapshot, cause } = event else { unreachable!() };
    assert_eq!(cause, SnapshotCause::Reorg);
    assert_eq!(snapshot.token_id, minted.token_id);
    assert!(!snapshot.is_active, "the grant was reorged out: {snapshot:?}");
    assert_eq!(snapshot.owner, None);
    assert!(!seen.iter().any(|e| matches!(e, ChainEvent::Granted { .. })), "no grant on the new branch: {seen:?}");

    // The cursor now names a block of the new branch.
    let head = chain.head().await;
    let (synced, _) = wait_for(&mut events, WAIT, |e| {
        matches!(e, ChainEvent::Synced { block_number, .. } if *block_number >= head)
    })
    .await;
    let ChainEvent::Synced { block_number, block_hash, .. } = synced else { unreachable!() };
    let block = provider.get_block_by_number(block_number.into()).await.unwrap().unwrap();
    assert_eq!(block_hash, block.header.hash.into());
}

#[tokio::test]
async fn a_second_rpc_endpoint_takes_over_when_the_first_dies() {
    let chain = TestChain::start(&[]).await;
    let target = format!("127.0.0.1:{}", chain.anvil.port()).parse().unwrap();
    let first = TcpProxy::start(target).await.unwrap();
    let second = TcpProxy::start(target).await.unwrap();
    let (mut events, _task) = spawn_follower(
        chain.follower_config(vec![first.http_url(), second.http_url()]),
        StartState::default(),
    );
    let owner = chain.address(1);

    let a = chain.admin.mint(chain.contract, owner, "node-fo-a", &test_key(1), "").await.unwrap();
    wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Granted { token_id, .. } if *token_id == a.token_id)).await;

    first.kill();
    let b = chain.admin.mint(chain.contract, owner, "node-fo-b", &test_key(2), "").await.unwrap();
    let (_, seen) =
        wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Granted { token_id, .. } if *token_id == b.token_id))
            .await;
    assert!(
        !seen.iter().any(|e| matches!(e, ChainEvent::Unavailable { .. })),
        "one live endpoint is enough: {seen:?}"
    );

    second.kill();
    let (event, _) = wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Unavailable { .. })).await;
    let ChainEvent::Unavailable { error } = event else { unreachable!() };
    assert!(error.contains("no RPC endpoint answered"), "{error}");
}

/// Whether the follower still sends requests through `proxy`, over 600 ms
/// (it polls every 50 ms here).
async fn still_used(proxy: &TcpProxy) -> bool {
    let before = proxy.requested();
    tokio::time::sleep(Duration::from_millis(600)).await;
    proxy.requested() > before
}

/// First endpoint lost, then back on its old port in front of `comeback`:
/// returns both proxies after two rechecks.
async fn fail_over_then_bring_back(chain: &TestChain, comeback: std::net::SocketAddr) -> (TcpProxy, TcpProxy, tokio::sync::mpsc::Receiver<ChainEvent>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let target = format!("127.0.0.1:{}", chain.anvil.port()).parse().unwrap();
    let first = TcpProxy::start(target).await.unwrap();
    let second = TcpProxy::start(target).await.unwrap();
    let config = chain.follower_config(vec![first.http_url(), second.http_url()]);
    let recheck = config.backoff.max * 3;
    let (mut events, task) = spawn_follower(config, StartState::default());
    let owner = chain.address(1);
    let a = chain.admin.mint(chain.contract, owner, "node-back-a", &test_key(1), "").await.unwrap();
    wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Granted { token_id, .. } if *token_id == a.token_id)).await;
    first.kill();
    let b = chain.admin.mint(chain.contract, owner, "node-back-b", &test_key(2), "").await.unwrap();
    wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Granted { token_id, .. } if *token_id == b.token_id)).await;
    assert!(still_used(&second).await, "on the second endpoint after the failover");
    let first = TcpProxy::start_at(first.addr, comeback).await.unwrap();
    tokio::time::sleep(recheck * 2 + Duration::from_millis(500)).await;
    assert!(first.accepted() > 0, "the follower never looked back at the first endpoint");
    (first, second, events, task)
}

#[tokio::test]
async fn the_follower_goes_back_to_the_first_endpoint_once_it_answers_again() {
    let chain = TestChain::start(&[]).await;
    let target = format!("127.0.0.1:{}", chain.anvil.port()).parse().unwrap();
    let (first, second, mut events, _task) = fail_over_then_bring_back(&chain, target).await;
    assert!(!still_used(&second).await, "back on the first endpoint, the second is left alone");
    assert!(still_used(&first).await);
    let c = chain.admin.mint(chain.contract, chain.address(1), "node-back-c", &test_key(3), "").await.unwrap();
    wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Granted { token_id, .. } if *token_id == c.token_id)).await;
}

#[tokio::test]
async fn a_preferred_endpoint_that_is_behind_is_not_taken_back() {
    let chain = TestChain::start(&[]).await;
    // The first URL comes back in front of another node still at block 0,
    // like a restarted node that has not synced yet.
    let lagging = gateway_tests::anvil::spawn_anvil(&[]);
    let lagging_addr = format!("127.0.0.1:{}", lagging.port()).parse().unwrap();
    let (_first, second, mut events, _task) = fail_over_then_bring_back(&chain, lagging_addr).await;
    assert!(still_used(&second).await, "the follower left the up-to-date endpoint for one that is behind");
    let c = chain.admin.mint(chain.contract, chain.address(1), "node-back-c", &test_key(3), "").await.unwrap();
    wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Granted { token_id, .. } if *token_id == c.token_id)).await;
}

#[tokio::test]
async fn reconcile_rereads_every_known_token_and_corrects_drift() {
    let chain = TestChain::start(&[]).await;
    let owner = chain.address(1);
    let kept = chain.admin.mint(chain.contract, owner, "node-kept", &test_key(1), "").await.unwrap();
    let gone = chain.admin.mint(chain.contract, owner, "node-gone", &test_key(2), "").await.unwrap();
    chain.admin.revoke(chain.contract, U256::from(gone.token_id)).await.unwrap();
    // More tokens than one reconcile slice, so a pass spans several turns of the loop.
    for n in 3..=40 {
        chain.admin.mint(chain.contract, owner, &format!("node-{n}"), &test_key(n), "").await.unwrap();
    }

    // The consumer believes in a token 99 the chain never had (drift, e.g. a
    // hand-edited registry); the follower's reconcile must say so.
    let mut config = chain.follower_config(vec![chain.http_url()]);
    config.reconcile_interval = Duration::from_millis(300);
    let start = StartState { cursor: None, known_tokens: [(99, Some(gateway_core::testing::owner(1)))].into_iter().collect() };
    let (mut events, _task) = spawn_follower(config, start);

    let mut reconciled = std::collections::BTreeMap::new();
    while reconciled.len() < 41 {
        let (event, _) = wait_for(&mut events, WAIT, |e| {
            matches!(e, ChainEvent::Snapshot { cause: SnapshotCause::Reconcile, .. })
        })
        .await;
        if let ChainEvent::Snapshot { snapshot, .. } = event {
            reconciled.insert(snapshot.token_id, snapshot);
        }
    }
    let kept_state = &reconciled[&kept.token_id];
    assert!(kept_state.is_active && kept_state.public_key == test_key(1) && kept_state.node_id == "node-kept");
    assert!(!reconciled[&gone.token_id].is_active);
    assert_eq!(reconciled[&99].owner, None, "a token the chain does not have reads as gone");
    assert!((3..=40).all(|t| reconciled[&t].is_active && reconciled[&t].public_key == test_key(t as u64)));
    assert!(!reconciled[&99].is_active);
}

#[tokio::test]
async fn a_grant_reorged_out_before_its_confirmations_is_never_delivered() {
    let chain = TestChain::start(&[]).await;
    let mut config = chain.follower_config(vec![chain.http_url()]);
    config.confirmations = 3;
    let (mut events, _task) = spawn_follower(config, StartState::default());
    let provider = chain.admin.provider().clone();
    wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Synced { .. })).await;

    let snapshot_id: U256 = provider.raw_request("evm_snapshot".into(), ()).await.unwrap();
    let minted = chain.admin.mint(chain.contract, chain.address(1), "node-short", &test_key(7), "").await.unwrap();
    // Let the follower see the mint (held: one confirmation of three).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reverted: bool = provider.raw_request("evm_revert".into(), (snapshot_id,)).await.unwrap();
    assert!(reverted);
    chain.mine(5).await;

    let head = chain.head().await;
    let (_, seen) = wait_for(&mut events, WAIT, |e| {
        matches!(e, ChainEvent::Synced { block_number, .. } if *block_number >= head)
    })
    .await;
    assert!(
        !seen.iter().any(|e| matches!(e, ChainEvent::Granted { token_id, .. } if *token_id == minted.token_id)),
        "a grant that never reached its confirmations must not be delivered: {seen:?}"
    );
}

#[tokio::test]
async fn a_reorg_while_the_follower_was_down_is_found_from_the_persisted_cursor() {
    let chain = TestChain::start(&[]).await;
    let provider = chain.admin.provider().clone();
    let snapshot_id: U256 = provider.raw_request("evm_snapshot".into(), ()).await.unwrap();
    let minted = chain.admin.mint(chain.contract, chain.address(1), "node-down", &test_key(8), "").await.unwrap();

    let config = chain.follower_config(vec![chain.http_url()]);
    let (mut events, task) = spawn_follower(config.clone(), StartState::default());
    let (synced, _) = wait_for(&mut events, WAIT, |e| {
        matches!(e, ChainEvent::Synced { block_number, .. } if *block_number >= minted.tx.block_number)
    })
    .await;
    let ChainEvent::Synced { block_number, block_hash, .. } = synced else { unreachable!() };
    drop(events);
    task.await.unwrap().unwrap();

    // While it is down, the mint's block is replaced by a longer branch without it.
    let reverted: bool = provider.raw_request("evm_revert".into(), (snapshot_id,)).await.unwrap();
    assert!(reverted);
    chain.mine(3).await;

    let start = StartState {
        cursor: Some(gateway_core::chain::Cursor { block_number, block_hash }),
        known_tokens: [(minted.token_id, Some(chain.address(1).into()))]
            .into_iter()
            .collect(),
    };
    let (mut events, _task) = spawn_follower(config, start);
    let (event, _) = wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Snapshot { .. })).await;
    assert!(
        matches!(&event, ChainEvent::Snapshot { snapshot, cause: SnapshotCause::Reorg }
            if snapshot.token_id == minted.token_id && snapshot.owner.is_none() && !snapshot.is_active),
        "{event:?}"
    );
}

#[tokio::test]
async fn a_dead_websocket_endpoint_falls_back_to_polling_another() {
    let chain = TestChain::start(&[]).await;
    let target = format!("127.0.0.1:{}", chain.anvil.port()).parse().unwrap();
    let ws = TcpProxy::start(target).await.unwrap();
    let (mut events, _task) = spawn_follower(
        chain.follower_config(vec![format!("ws://{}", ws.addr), chain.http_url()]),
        StartState::default(),
    );
    let owner = chain.address(1);
    let a = chain.admin.mint(chain.contract, owner, "node-ws-a", &test_key(1), "").await.unwrap();
    wait_for(&mut events, WAIT, |e| matches!(e, ChainEvent::Granted { token_id, .. } if *token_id == a.token_id)).await;

    ws.kill();
    let b = chain.admin.mint(chain.contract, owner, "node-ws-b", &test_key(2), "").await.unwrap();
    // Well under the 5 s call timeout: the dead socket fails calls at once
    // instead of holding them through reconnection attempts.
    let within = Duration::from_secs(3);
    wait_for(&mut events, within, |e| matches!(e, ChainEvent::Granted { token_id, .. } if *token_id == b.token_id)).await;
}

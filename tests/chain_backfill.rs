//! Backfill and resumption against a real anvil: many grants discovered from
//! logs in bounded ranges, and a follower restarted from its persisted cursor.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use gateway::chain::contract::DstackAccessNFT;
use gateway::store::cursor_file as cursor;
use gateway_core::chain::Cursor;
use gateway_core::chain::{ChainEvent, TokenId};
use gateway::chain::follower::StartState;
use gateway_tests::anvil::{collect_until_synced, spawn_follower, test_key, TestChain};

/// Sends `count` mints without waiting for each, then mines them into as few
/// blocks as the gas limit allows: 1,000 one-per-block mints would take minutes.
async fn mint_batch(chain: &TestChain, first: u64, count: u64, owner: Address) {
    let provider = chain.admin.provider().clone();
    let _: serde_json::Value = provider.raw_request("evm_setAutomine".into(), (false,)).await.unwrap();
    let contract = DstackAccessNFT::new(chain.contract, provider.clone());
    let admin = chain.address(0);
    let first_nonce = provider.get_transaction_count(admin).await.unwrap();
    let mut hashes: Vec<B256> = Vec::new();
    for (offset, n) in (first..first + count).enumerate() {
        let pending = contract
            .mintNodeAccess(owner, format!("node-{n}"), test_key(n), String::new())
            .nonce(first_nonce + offset as u64)
            .gas(500_000)
            // Full blocks raise the base fee by 12.5% each (EIP-1559); a fee cap far
            // above it keeps the later mints from being priced out of the pool.
            .max_fee_per_gas(100_000_000_000)
            .max_priority_fee_per_gas(1_000_000_000)
            .send()
            .await
            .unwrap();
        hashes.push(*pending.tx_hash());
    }
    let last = hashes.last().copied().unwrap();
    for _ in 0..count + 1 {
        let _: serde_json::Value = provider.raw_request("evm_mine".into(), ()).await.unwrap();
        if provider.get_transaction_receipt(last).await.unwrap().is_some() {
            break;
        }
    }
    let _: serde_json::Value = provider.raw_request("evm_setAutomine".into(), (true,)).await.unwrap();
    for hash in hashes {
        let receipt = provider.get_transaction_receipt(hash).await.unwrap().expect("every mint is mined");
        assert!(receipt.status(), "mint {hash} failed");
    }
}

fn granted_tokens(events: &[ChainEvent]) -> Vec<TokenId> {
    events
        .iter()
        .filter_map(|e| match e {
            ChainEvent::Granted { token_id, .. } => Some(*token_id),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_thousand_mints_are_backfilled_exactly() {
    let chain = TestChain::start(&[]).await;
    mint_batch(&chain, 1, 1_000, chain.address(1)).await;
    let head = chain.head().await;
    assert!(head > chain.deploy_block + 2, "the mints should span several blocks (head {head})");

    let mut config = chain.follower_config(vec![chain.http_url()]);
    // Force many bounded eth_getLogs ranges across the mint blocks.
    config.max_block_span = 2;
    let started = std::time::Instant::now();
    let (mut events, _task) = spawn_follower(config, StartState::default());
    let seen = collect_until_synced(&mut events, head, Duration::from_secs(120)).await;
    let took = started.elapsed();

    let mut granted: BTreeMap<TokenId, (String, String)> = BTreeMap::new();
    for event in &seen {
        if let ChainEvent::Granted { token_id, node_id, public_key, .. } = event {
            let previous = granted.insert(*token_id, (node_id.clone(), public_key.clone()));
            assert!(previous.is_none(), "token {token_id} delivered twice");
        }
    }
    assert_eq!(granted.len(), 1_000);
    for (token_id, (node_id, public_key)) in &granted {
        let n = *token_id as u64;
        assert_eq!(node_id, &format!("node-{n}"));
        assert_eq!(public_key, &test_key(n));
    }
    assert_eq!(granted.keys().next(), Some(&1));
    assert_eq!(granted.keys().last(), Some(&1_000));
    let synced_blocks: Vec<u64> = seen
        .iter()
        .filter_map(|e| match e {
            ChainEvent::Synced { block_number, .. } => Some(*block_number),
            _ => None,
        })
        .collect();
    assert!(synced_blocks.windows(2).all(|w| w[0] < w[1]), "cursor only moves forward: {synced_blocks:?}");
    assert!(synced_blocks.len() > 2, "one Synced per bounded range: {synced_blocks:?}");
    eprintln!("backfilled 1,000 grants over {} blocks in {took:?}", head - chain.deploy_block);
}

#[tokio::test]
async fn a_restarted_follower_resumes_from_its_cursor_without_loss_or_duplicates() {
    let chain = TestChain::start(&[]).await;
    let owner = chain.address(1);
    // One mint per block, so the cursor can stop between any two of them.
    for n in 1..=12 {
        chain.admin.mint(chain.contract, owner, &format!("node-{n}"), &test_key(n), "").await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let cursor_path = dir.path().join("cursor.json");

    // First run: apply events, persist the cursor at each Synced, and stop
    // part-way, dropping whatever arrived after the last persisted Synced (a crash).
    let mut config = chain.follower_config(vec![chain.http_url()]);
    config.max_block_span = 3;
    let (mut events, task) = spawn_follower(config.clone(), StartState::default());
    let mut applied: Vec<ChainEvent> = Vec::new();
    let mut committed = 0;
    let mut synced_count = 0;
    while synced_count < 2 {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv()).await.unwrap().unwrap();
        if let ChainEvent::Synced { block_number, block_hash, .. } = &event {
            cursor::store(&cursor_path, &Cursor { block_number: *block_number, block_hash: *block_hash }).unwrap();
            synced_count += 1;
            committed = applied.len() + 1;
        }
        applied.push(event);
    }
    // Read on past the cursor, then crash before the next one is persisted.
    if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
        applied.push(event);
    }
    drop(events);
    task.await.unwrap().unwrap();
    applied.truncate(committed);
    let first_run = granted_tokens(&applied);
    assert!(!first_run.is_empty() && first_run.len() < 12, "stopped mid-stream: {first_run:?}");

    // More grants while the follower is down.
    for n in 13..=15 {
        chain.admin.mint(chain.contract, owner, &format!("node-{n}"), &test_key(n), "").await.unwrap();
    }
    let head = chain.head().await;

    let resume = cursor::load(&cursor_path).unwrap().expect("a cursor was persisted");
    let known = first_run.iter().map(|&t| (t, None)).collect();
    let (mut events, _task) = spawn_follower(config, StartState { cursor: Some(resume), known_tokens: known });
    let second_run = granted_tokens(&collect_until_synced(&mut events, head, Duration::from_secs(30)).await);

    let mut all: Vec<TokenId> = first_run.iter().chain(&second_run).copied().collect();
    let delivered = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), delivered, "a grant was delivered twice: {first_run:?} then {second_run:?}");
    assert_eq!(all, (1..=15).collect::<Vec<TokenId>>(), "a grant was lost: {first_run:?} then {second_run:?}");
}

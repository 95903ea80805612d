//! A real local chain for the tests: the npm `anvil` binary on a loopback port
//! chosen by the OS, with the reference contract deployed, killed on drop.

use std::path::PathBuf;
use std::time::Duration;

use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::Address;
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use gateway::chain::follower::{Follower, FollowerConfig, StartState};
use gateway_core::chain::backoff::Backoff;
use gateway_core::chain::ChainEvent;
use gateway::node::admin::Session;
use tokio::sync::mpsc;

use crate::netns::repo_root;

/// `node_modules/.bin/anvil`, installed by `npm ci` at the repository root.
pub fn anvil_binary() -> PathBuf {
    let path = repo_root().join("node_modules/.bin/anvil");
    assert!(path.exists(), "{} is missing: run `npm ci` at the repository root", path.display());
    path
}

/// Starts anvil on 127.0.0.1 with `extra_args` (e.g. `--no-mining`).
pub fn spawn_anvil(extra_args: &[&str]) -> AnvilInstance {
    // States stay in memory: anvil otherwise spills them under
    // ~/.foundry/anvil/tmp, and a killed anvil leaves them there.
    // (`--prune-history` keeps no states on disk already, and anvil refuses both.)
    let persisted: &[&str] =
        if extra_args.contains(&"--prune-history") { &[] } else { &["--max-persisted-states", "0"] };
    Anvil::at(anvil_binary())
        .host("127.0.0.1")
        .args(persisted.iter().copied())
        .args(extra_args.iter().copied())
        .spawn()
}

/// A running anvil with the contract deployed by account 0 (the contract owner).
pub struct TestChain {
    pub anvil: AnvilInstance,
    pub contract: Address,
    /// Signed by account 0: deploys, mints and revokes.
    pub admin: Session,
    pub deploy_block: u64,
}

impl TestChain {
    pub async fn start(extra_args: &[&str]) -> Self {
        let anvil = spawn_anvil(extra_args);
        let admin = Session::with_signer(&anvil.endpoint(), signer(&anvil, 0)).await.expect("admin session");
        let deployed = admin.deploy().await.expect("deploy DstackAccessNFT");
        let contract = deployed.address.parse().expect("deployed address");
        Self { anvil, contract, admin, deploy_block: deployed.tx.block_number }
    }

    pub fn http_url(&self) -> String {
        self.anvil.endpoint()
    }

    pub fn ws_url(&self) -> String {
        self.anvil.ws_endpoint()
    }

    /// A session signed by anvil's dev account `index` (a token owner, say).
    pub async fn session(&self, index: usize) -> Session {
        Session::with_signer(&self.http_url(), signer(&self.anvil, index)).await.expect("session")
    }

    pub fn address(&self, index: usize) -> Address {
        self.anvil.addresses()[index]
    }

    /// Mines `count` empty blocks.
    pub async fn mine(&self, count: u64) {
        for _ in 0..count {
            let _: serde_json::Value =
                self.admin.provider().raw_request("evm_mine".into(), ()).await.expect("evm_mine");
        }
    }

    /// A follower configuration tuned for tests: fast polling and short backoff,
    /// starting at the deployment block.
    pub fn follower_config(&self, rpc_urls: Vec<String>) -> FollowerConfig {
        let mut config = FollowerConfig::new(rpc_urls, self.contract);
        config.start_block = self.deploy_block;
        config.poll_interval = Duration::from_millis(50);
        config.backoff = Backoff { initial: Duration::from_millis(50), max: Duration::from_millis(500) };
        config.call_timeout = Duration::from_secs(5);
        config
    }

    pub async fn head(&self) -> u64 {
        self.admin.provider().get_block_number().await.expect("eth_blockNumber")
    }
}

pub fn signer(anvil: &AnvilInstance, index: usize) -> PrivateKeySigner {
    PrivateKeySigner::from(anvil.keys()[index].clone())
}

/// A WireGuard public key that is distinct for each `n` (canonical base64 of 32 bytes).
pub fn test_key(n: u64) -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&n.to_be_bytes());
    bytes[31] = 0x5a;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Receives events until `wanted` matches one, failing the test after `within`.
pub async fn wait_for(
    events: &mut mpsc::Receiver<ChainEvent>,
    within: Duration,
    mut wanted: impl FnMut(&ChainEvent) -> bool,
) -> (ChainEvent, Vec<ChainEvent>) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => {
                if wanted(&event) {
                    return (event, seen);
                }
                seen.push(event);
            }
            Ok(None) => panic!("the follower stopped; events so far: {seen:#?}"),
            Err(_) => panic!("no matching event within {within:?}; events so far: {seen:#?}"),
        }
    }
}

/// Everything up to the first `Synced` at or beyond `block`.
pub async fn collect_until_synced(
    events: &mut mpsc::Receiver<ChainEvent>,
    block: u64,
    within: Duration,
) -> Vec<ChainEvent> {
    let (synced, mut seen) =
        wait_for(events, within, |e| matches!(e, ChainEvent::Synced { block_number, .. } if *block_number >= block)).await;
    seen.push(synced);
    seen
}

/// Runs a follower in the background; dropping the receiver stops it.
pub fn spawn_follower(
    config: FollowerConfig,
    start: StartState,
) -> (mpsc::Receiver<ChainEvent>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    // Follower warnings (RPC failures, reorgs) go to stderr, where a failing test shows them.
    gateway::logging::init(gateway::logging::LogFormat::Text);
    let (sender, events) = mpsc::channel(4096);
    let follower = Follower::new(config, start, sender).expect("follower configuration");
    (events, tokio::spawn(follower.run()))
}

//! `gateway chain follow`: runs the follower on its own and prints every
//! [`ChainEvent`] as a line, JSON with `--json` (I/O edge: operators and tests).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use alloy::primitives::Address;
use anyhow::Context;
use tokio::sync::mpsc;

use gateway_core::chain::{ChainEvent, Cursor};

use super::follower::{Follower, FollowerConfig, StartState};
use crate::store::cursor_file as cursor;

#[derive(clap::Subcommand, Debug)]
pub enum ChainCommand {
    /// Follow the access contract and print its events as lines (JSON lines with --json).
    Follow(FollowArgs),
}

#[derive(clap::Args, Debug)]
pub struct FollowArgs {
    /// RPC endpoints (http(s):// polls, ws(s):// subscribes), tried in order with failover.
    #[arg(long = "rpc-url", env = "GATEWAY_RPC_URL", value_delimiter = ',', required = true)]
    pub rpc_urls: Vec<String>,
    /// The DstackAccessNFT contract address.
    #[arg(long, env = "GATEWAY_CONTRACT")]
    pub contract: Address,
    /// First block to scan when there is no cursor (the contract's deployment block).
    #[arg(long, default_value_t = 0)]
    pub from_block: u64,
    /// Confirmations a grant needs before it is reported (revocations never wait).
    #[arg(long, default_value_t = 0)]
    pub confirmations: u64,
    /// HTTP polling interval in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub poll_interval_ms: u64,
    /// Seconds between re-reads of every known token.
    #[arg(long, default_value_t = 300)]
    pub reconcile_secs: u64,
    /// The chain every endpoint must serve (eth_chainId); unset: the first
    /// endpoint that answers sets it for this run.
    #[arg(long)]
    pub chain_id: Option<u64>,
    /// Largest block range per eth_getLogs (by default a ceiling above any
    /// chain's length: the provider's refusals teach the follower what fits).
    #[arg(long, default_value_t = gateway_core::chain::log_span::SPAN_CEILING)]
    pub max_block_span: u64,
    /// Resume from this cursor file and advance it after printing each `Synced`.
    #[arg(long)]
    pub cursor: Option<PathBuf>,
    /// Exit once caught up with the chain head.
    #[arg(long)]
    pub exit_when_synced: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: ChainCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    match cmd {
        ChainCommand::Follow(args) => runtime.block_on(follow(args)),
    }
}

async fn follow(args: FollowArgs) -> anyhow::Result<()> {
    let mut config = FollowerConfig::new(&args.rpc_urls, args.contract);
    config.start_block = args.from_block;
    config.confirmations = args.confirmations;
    config.poll_interval = Duration::from_millis(args.poll_interval_ms);
    config.reconcile_interval = Duration::from_secs(args.reconcile_secs);
    config.max_block_span = args.max_block_span;
    config.chain_id = super::identity::establish(&args.rpc_urls, args.contract.into(), args.chain_id, None, config.call_timeout).await?;
    let start_cursor = match &args.cursor {
        Some(path) => cursor::load(path)?,
        None => None,
    };
    let (sender, mut events) = mpsc::channel(1024);
    let follower = Follower::new(config, StartState { cursor: start_cursor, ..Default::default() }, sender)?;
    let task = tokio::spawn(follower.run());
    let mut stdout = std::io::stdout().lock();
    while let Some(event) = events.recv().await {
        if args.json {
            writeln!(stdout, "{}", serde_json::to_string(&event)?)?;
        } else {
            writeln!(stdout, "{}", describe(&event))?;
        }
        stdout.flush()?;
        if let ChainEvent::Synced { block_number, block_hash, head } = &event {
            if let Some(path) = &args.cursor {
                cursor::store(path, &Cursor { block_number: *block_number, block_hash: *block_hash })?;
            }
            if args.exit_when_synced && block_number >= head {
                break;
            }
        }
    }
    drop(events);
    task.await.context("follower task")?
}

/// One human-readable line per event.
pub fn describe(event: &ChainEvent) -> String {
    match event {
        ChainEvent::Granted { token_id, node_id, owner, public_key, meta } => format!(
            "granted  token {token_id} node {node_id} key {public_key} owner {owner} (block {}, tx {})",
            meta.block_number, meta.tx_hash
        ),
        ChainEvent::Revoked { token_id, node_id, meta } => {
            format!("revoked  token {token_id} node {node_id} (block {}, tx {})", meta.block_number, meta.tx_hash)
        }
        ChainEvent::Transferred { token_id, from, to, meta } => format!(
            "transfer token {token_id} {from} -> {to}, key unbound (block {}, tx {})",
            meta.block_number, meta.tx_hash
        ),
        ChainEvent::KeyUpdated { owner, public_key, meta } => {
            format!("rekey    owner {owner} key {public_key} (block {}, tx {})", meta.block_number, meta.tx_hash)
        }
        ChainEvent::Snapshot { snapshot: s, cause } => format!(
            "state    token {} node {} key {} active {} owner {} at block {} ({cause:?})",
            s.token_id,
            s.node_id,
            s.public_key,
            s.is_active,
            s.owner.map_or_else(|| "none".to_string(), |o| o.to_string()),
            s.block_number
        ),
        ChainEvent::Synced { block_number, head, .. } => format!("synced   block {block_number} (head {head})"),
        ChainEvent::Unavailable { error } => format!("unavailable: {error}"),
        ChainEvent::EndpointChecked { endpoint, expected, served } if expected != served => {
            format!("refused  {endpoint}: serves chain {served}, not chain {expected}")
        }
        ChainEvent::EndpointChecked { endpoint, served, .. } => format!("endpoint {endpoint} serves chain {served}"),
    }
}

//! The chain follower (I/O edge): backfills the access contract's logs from a
//! start block in bounded ranges, then follows new blocks (WebSocket heads or
//! HTTP polling), and sends plain [`ChainEvent`]s down a channel.
//!
//! Delivery is at-least-once in chain order: `Synced { block_number }` follows
//! every event up to that block, so a consumer that persists it after applying
//! them and restarts from it loses nothing; what it sees twice, it applies
//! idempotently. Grants are held for the configured confirmations and the
//! cursor never passes a held grant; revocations, transfers and rekeys go out
//! at first sight.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, Log};
use futures::StreamExt;
use tokio::sync::mpsc;

use gateway_core::chain::abi::{self, DecodeError, RawLog};
use gateway_core::chain::backoff::Backoff;
use gateway_core::chain::confirm::{HeldGrants, Release};
use gateway_core::chain::range::{AdaptiveSpan, BlockRange, DEFAULT_MAX_BLOCK_SPAN};
use gateway_core::chain::{BlockHash, ChainEvent, Cursor, SnapshotCause, TokenId, TokenSnapshot};

use super::contract::DstackAccessNFT;
use super::rpc::{CallError, RpcError, RpcPool, DEFAULT_CALL_TIMEOUT};

/// How often an unchanged `Synced` is repeated as a liveness heartbeat.
const SYNCED_HEARTBEAT: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct FollowerConfig {
    /// Tried in order; the first that answers is used until it fails.
    pub rpc_urls: Vec<String>,
    pub contract: Address,
    /// The first block to scan when there is no cursor (the contract's deployment block).
    pub start_block: u64,
    /// Confirmations a grant needs before it is delivered (0 and 1: as soon as it is mined).
    pub confirmations: u64,
    /// HTTP polling interval, and the wake-up when a WebSocket falls silent.
    pub poll_interval: Duration,
    /// How often every known token is re-read to correct drift.
    pub reconcile_interval: Duration,
    pub max_block_span: u64,
    /// How far back to rewind when a reorg is deeper than the hashes we kept.
    pub max_reorg_depth: u64,
    pub backoff: Backoff,
    pub call_timeout: Duration,
    /// The chain every endpoint must serve (`eth_chainId` on connect);
    /// `None`: the first endpoint that answers sets it.
    pub chain_id: Option<u64>,
    /// Send a `ChainEvent::EndpointChecked` for each connect's chain check
    /// (the daemon's readiness and metrics); off, they are only logged.
    pub report_chain_checks: bool,
}

impl FollowerConfig {
    pub fn new(rpc_urls: Vec<String>, contract: Address) -> Self {
        Self {
            rpc_urls,
            contract,
            start_block: 0,
            confirmations: 0,
            // Sub-second so a revocation reaches the XDP maps within about a block time of an L2.
            poll_interval: Duration::from_millis(500),
            reconcile_interval: Duration::from_secs(300),
            max_block_span: DEFAULT_MAX_BLOCK_SPAN,
            // Ethereum mainnet finalises in 64 blocks; L2 reorgs are far shallower.
            max_reorg_depth: 128,
            backoff: Backoff::default(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            chain_id: None,
            report_chain_checks: false,
        }
    }
}

/// Where to resume: the consumer's persisted cursor and the tokens it knows,
/// so that reconcile and reorg recovery cover tokens discovered before it.
#[derive(Clone, Debug, Default)]
pub struct StartState {
    pub cursor: Option<Cursor>,
    pub known_tokens: BTreeMap<TokenId, Option<gateway_core::chain::Address>>,
}

enum StepError {
    /// The receiver is gone: stop quietly.
    Closed,
    Rpc(RpcError),
}

impl From<RpcError> for StepError {
    fn from(err: RpcError) -> Self {
        StepError::Rpc(err)
    }
}

type StepResult<T = ()> = Result<T, StepError>;

/// Tokens re-read per turn of the loop during a reconcile pass: 32 tokens are
/// 64 calls, about 3 s at a 50 ms round trip, the most a revocation waits
/// behind a reconcile.
const RECONCILE_SLICE: usize = 32;

/// What one `eth_getLogs` range gave.
enum Fetched {
    Logs(B256, Vec<Log>),
    /// A node refused the range as too large: the span was halved, retry at once.
    Narrowed,
    /// The chain changed while we read (or the range end is gone): start over.
    Moved,
}

pub struct Follower {
    config: FollowerConfig,
    rpc: RpcPool,
    events: mpsc::Sender<ChainEvent>,
    /// The last block whose logs were all processed (it may be ahead of the
    /// delivered cursor while grants are held).
    scanned: Option<(u64, B256)>,
    last_synced: Option<(u64, B256)>,
    /// Token -> owner, for reconcile and for resolving `PublicKeyUpdated`.
    known: BTreeMap<TokenId, Option<gateway_core::chain::Address>>,
    held: HeldGrants,
    /// Hashes of recently scanned blocks, to find the common ancestor after a reorg.
    recent_hashes: BTreeMap<u64, B256>,
    /// Tokens touched by logs in recent blocks: what a reorg may have changed.
    recent_tokens: BTreeMap<u64, BTreeSet<TokenId>>,
    /// Tokens to re-read once the rescan after a reorg has caught up.
    reorg_rereads: BTreeSet<TokenId>,
    /// Tokens still to re-read in the current reconcile pass.
    reconcile_queue: BTreeSet<TokenId>,
    span: AdaptiveSpan,
    outage_failures: u32,
    last_heartbeat: std::time::Instant,
    /// The transfer last read back, so its two logs cost one read.
    last_transfer_read: Option<(TokenId, gateway_core::chain::TxHash)>,
}

impl Follower {
    pub fn new(
        config: FollowerConfig,
        start: StartState,
        events: mpsc::Sender<ChainEvent>,
    ) -> anyhow::Result<Self> {
        let rpc = RpcPool::new(&config.rpc_urls, config.backoff, config.call_timeout)?
            .with_chain_check(config.chain_id, config.report_chain_checks.then(|| events.clone()));
        let mut recent_hashes = BTreeMap::new();
        let scanned = match &start.cursor {
            Some(cursor) => {
                let hash = B256::from(cursor.block_hash);
                recent_hashes.insert(cursor.block_number, hash);
                Some((cursor.block_number, hash))
            }
            None => None,
        };
        Ok(Self {
            span: AdaptiveSpan::new(config.max_block_span),
            config,
            rpc,
            events,
            scanned,
            // The first catch-up always reports its cursor, even when nothing
            // moved since the persisted one: the consumer learns it is current.
            last_synced: None,
            known: start.known_tokens,
            held: HeldGrants::default(),
            recent_hashes,
            recent_tokens: BTreeMap::new(),
            reorg_rereads: BTreeSet::new(),
            reconcile_queue: BTreeSet::new(),
            outage_failures: 0,
            // Due at once: the first step after a restart reports freshness.
            last_heartbeat: std::time::Instant::now() - SYNCED_HEARTBEAT,
            last_transfer_read: None,
        })
    }

    /// Runs until the receiver is dropped. RPC failures never end it: they are
    /// logged, reported as [`ChainEvent::Unavailable`], and retried with backoff.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let mut next_reconcile = tokio::time::Instant::now() + self.config.reconcile_interval;
        let mut heads = None;
        loop {
            // Subscribe before catching up, so no head mined meanwhile goes unnoticed.
            if heads.is_none() {
                heads = self.rpc.subscribe_heads().await;
            }
            let mut outcome = self.step().await;
            if outcome.is_ok() && self.reconcile_queue.is_empty() && tokio::time::Instant::now() >= next_reconcile {
                self.reconcile_queue = self.known.keys().copied().collect();
                tracing::debug!(tokens = self.reconcile_queue.len(), "reconciling every known token");
                next_reconcile = tokio::time::Instant::now() + self.config.reconcile_interval;
            }
            if outcome.is_ok() && !self.reconcile_queue.is_empty() {
                outcome = self.reconcile_some().await;
            }
            match outcome {
                Ok(()) => self.outage_failures = 0,
                Err(StepError::Closed) => return Ok(()),
                Err(StepError::Rpc(err)) => {
                    if self.report_failure(err).await.is_err() {
                        return Ok(());
                    }
                    let delay = self.rpc.backoff().delay(self.outage_failures);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.events.closed() => return Ok(()),
                    }
                    continue;
                }
            }
            if !self.reconcile_queue.is_empty() {
                // Mid-pass: the next slice follows at once (after a look at the head).
                tokio::task::yield_now().await;
                continue;
            }
            let silence = match heads {
                // The subscription is the trigger; the timer only covers a head it missed.
                Some(_) => self.config.poll_interval.max(Duration::from_secs(2)),
                None => self.config.poll_interval,
            };
            tokio::select! {
                head = async { heads.as_mut()?.next().await }, if heads.is_some() => {
                    if head.is_none() {
                        tracing::warn!(endpoint = %self.rpc.current_endpoint(), "new-heads subscription ended; polling");
                        heads = None;
                    }
                }
                _ = tokio::time::sleep(silence) => {}
                _ = self.events.closed() => return Ok(()),
            }
        }
    }

    async fn report_failure(&mut self, err: RpcError) -> StepResult {
        self.outage_failures = self.outage_failures.saturating_add(1);
        tracing::warn!(error = %err, failures = self.outage_failures, "chain follower step failed; retrying");
        // Once per outage: the consumer's staleness clock starts at the first.
        if self.outage_failures == 1 && matches!(err, RpcError::AllDown { .. }) {
            self.emit(ChainEvent::Unavailable { error: err.to_string() }).await?;
        }
        Ok(())
    }

    /// Catches up from the scanned block to the current head.
    async fn step(&mut self) -> StepResult {
        let head = latest_block(&mut self.rpc).await?;
        if let Some((number, hash)) = self.scanned {
            if self.block_hash(number).await? != Some(hash) {
                self.rewind_after_reorg(number, head).await?;
            }
        }
        let mut from = self.scanned.map_or(self.config.start_block, |(number, _)| number + 1);
        tracing::trace!(from, head, "following");
        while let Some(range) = self.span.next_range(from, head) {
            let logs = match self.fetch_range(range).await? {
                Fetched::Logs(hash, logs) => (hash, logs),
                Fetched::Narrowed => continue,
                // Re-evaluate from the top: the reorg check runs first.
                Fetched::Moved => return Ok(()),
            };
            self.process_logs(&logs, range.to, head).await?;
            from = range.to + 1;
            self.settle(head).await?;
        }
        self.settle(head).await
    }

    /// Delivers what became due and then the cursor for everything delivered.
    async fn settle(&mut self, head: u64) -> StepResult {
        self.release_confirmed(head).await?;
        // Before `Synced`: a consumer that persists the cursor must have applied
        // the corrections, or a crash in between would keep a reorged-out grant.
        self.reread_after_reorg().await?;
        self.emit_synced(head).await
    }

    /// The logs of `range` in chain order, with the hash of its last block.
    async fn fetch_range(&mut self, range: BlockRange) -> StepResult<Fetched> {
        let Some(hash_before) = self.block_hash(range.to).await? else {
            tracing::debug!(to = range.to, "range end not mined (any more); retrying");
            return Ok(Fetched::Moved);
        };
        let filter = Filter::new()
            .address(self.config.contract)
            .event_signature(abi::access_event_topics())
            .from_block(range.from)
            .to_block(range.to);
        let fetched = self
            .rpc
            .call("eth_getLogs", |p| {
                let filter = filter.clone();
                async move { Ok(p.get_logs(&filter).await?) }
            })
            .await;
        let mut logs = match fetched {
            Ok(logs) => logs,
            Err(RpcError::Rejected { endpoint, message, .. }) if self.span.shrink() => {
                tracing::warn!(%endpoint, error = %message, from = range.from, to = range.to, span = self.span.current(), "eth_getLogs refused; narrowing the range");
                return Ok(Fetched::Narrowed);
            }
            Err(err) => return Err(err.into()),
        };
        if self.block_hash(range.to).await? != Some(hash_before) || logs.iter().any(|log| log.removed) {
            tracing::info!(from = range.from, to = range.to, "chain reorganised while reading logs; retrying");
            return Ok(Fetched::Moved);
        }
        self.span.grow();
        logs.sort_by_key(|log| (log.block_number, log.log_index));
        Ok(Fetched::Logs(hash_before, logs))
    }

    async fn process_logs(&mut self, (to_hash, logs): &(B256, Vec<Log>), to: u64, head: u64) -> StepResult {
        for log in logs {
            // Grants confirmed before this log go out first, keeping chain order.
            self.release_confirmed(head).await?;
            match abi::decode_log(&raw_log(log)) {
                Ok(event) => self.handle_event(event).await?,
                Err(DecodeError::OtherEvent) => {}
                Err(err) => tracing::warn!(
                    block = ?log.block_number, tx = ?log.transaction_hash, error = %err,
                    "skipping an access-contract log that cannot be used"
                ),
            }
        }
        self.scanned = Some((to, *to_hash));
        self.recent_hashes.insert(to, *to_hash);
        self.prune_recent(to);
        Ok(())
    }

    async fn handle_event(&mut self, event: ChainEvent) -> StepResult {
        match &event {
            ChainEvent::Granted { token_id, meta, .. } => {
                self.note_recent(meta.block_number, *token_id);
                self.held.hold(*token_id, meta.block_number, meta.log_index, event.clone());
                Ok(())
            }
            ChainEvent::Revoked { token_id, meta, .. } => {
                self.note_recent(meta.block_number, *token_id);
                self.held.touch(*token_id);
                self.emit(event).await
            }
            ChainEvent::Transferred { token_id, to, meta, .. } => {
                let (token_id, tx_hash) = (*token_id, meta.tx_hash);
                self.note_recent(meta.block_number, token_id);
                self.held.touch(token_id);
                if let Some(owner) = self.known.get_mut(&token_id) {
                    *owner = Some(*to);
                }
                self.emit(event).await?;
                // The key goes at once; what the contract makes of a
                // transfer (ERC-721's `Transfer` alone says nothing of the
                // key) is read back: once per transaction, which the
                // reference contract logs twice (`Transfer`, `NodeAccessTransferred`).
                if self.last_transfer_read != Some((token_id, tx_hash)) {
                    self.last_transfer_read = Some((token_id, tx_hash));
                    self.send_snapshot(token_id, SnapshotCause::Reconcile).await?;
                }
                Ok(())
            }
            ChainEvent::KeyUpdated { owner, meta, .. } => {
                let owner = *owner;
                let block = meta.block_number;
                self.held.touch_owned_by(&owner);
                self.emit(event).await?;
                let owned: Vec<TokenId> = self
                    .known
                    .iter()
                    .filter(|(_, known_owner)| **known_owner == Some(owner))
                    .map(|(&token, _)| token)
                    .collect();
                for token_id in owned {
                    self.note_recent(block, token_id);
                    self.send_snapshot(token_id, SnapshotCause::KeyUpdated).await?;
                }
                Ok(())
            }
            _ => self.emit(event).await,
        }
    }

    async fn release_confirmed(&mut self, head: u64) -> StepResult {
        for release in self.held.release(head, self.config.confirmations) {
            match release {
                Release::Grant(event) => {
                    if let ChainEvent::Granted { token_id, owner, .. } = &event {
                        self.known.insert(*token_id, Some(*owner));
                    }
                    self.emit(event).await?;
                }
                // A later revoke, transfer or rekey already went out: the log's
                // content is stale, the chain's current state is not.
                Release::Reread(token_id) => self.send_snapshot(token_id, SnapshotCause::Reconcile).await?,
            }
        }
        Ok(())
    }

    /// Sends `Synced` for the highest block whose events are all delivered.
    async fn emit_synced(&mut self, head: u64) -> StepResult {
        let Some((scanned, scanned_hash)) = self.scanned else {
            return Ok(());
        };
        let (number, hash) = match self.held.earliest_block() {
            Some(held) if held <= scanned => {
                let Some(before) = held.checked_sub(1) else {
                    return Ok(());
                };
                match self.recent_hashes.get(&before) {
                    Some(hash) => (before, *hash),
                    None => match self.block_hash(before).await? {
                        Some(hash) => (before, hash),
                        None => return Ok(()),
                    },
                }
            }
            _ => (scanned, scanned_hash),
        };
        // Unchanged: still repeated now and then as a heartbeat, which tells
        // the consumer the chain answers and we are caught up (its staleness
        // clock); a quiet chain mints no blocks to say so.
        if self.last_synced == Some((number, hash)) && self.last_heartbeat.elapsed() < SYNCED_HEARTBEAT {
            return Ok(());
        }
        self.last_heartbeat = std::time::Instant::now();
        self.last_synced = Some((number, hash));
        self.emit(ChainEvent::Synced { block_number: number, block_hash: BlockHash::from(hash), head }).await
    }

    /// The block at our cursor changed: find the newest block we scanned that
    /// is still on the chain, forget everything after it, and remember which
    /// tokens to re-read once the rescan has caught up.
    async fn rewind_after_reorg(&mut self, scanned: u64, head: u64) -> StepResult {
        let mut ancestor = None;
        let candidates: Vec<(u64, B256)> = self.recent_hashes.iter().rev().map(|(&n, &h)| (n, h)).collect();
        for (number, hash) in candidates {
            if number > head {
                continue;
            }
            if self.block_hash(number).await? == Some(hash) {
                ancestor = Some((number, hash));
                break;
            }
        }
        let deeper_than_kept = ancestor.is_none();
        let ancestor = match ancestor {
            Some(found) => Some(found),
            None => {
                let back_to = scanned.saturating_sub(self.config.max_reorg_depth).min(head);
                if back_to < self.config.start_block {
                    None
                } else {
                    self.block_hash(back_to).await?.map(|hash| (back_to, hash))
                }
            }
        };
        let keep_up_to = ancestor.map_or(self.config.start_block.saturating_sub(1), |(n, _)| n);
        tracing::warn!(scanned, ancestor = keep_up_to, deeper_than_kept, "chain reorganisation: rescanning");
        let first_gone = keep_up_to.saturating_add(1);
        for tokens in self.recent_tokens.split_off(&first_gone).into_values() {
            self.reorg_rereads.extend(tokens);
        }
        if deeper_than_kept {
            self.reorg_rereads.extend(self.known.keys().copied());
        }
        self.recent_hashes.split_off(&first_gone);
        self.held.forget_after(keep_up_to);
        self.scanned = ancestor;
        if let Some((number, hash)) = ancestor {
            self.recent_hashes.insert(number, hash);
        }
        Ok(())
    }

    async fn reread_after_reorg(&mut self) -> StepResult {
        let tokens = std::mem::take(&mut self.reorg_rereads);
        for token_id in tokens {
            // A grant logged again on the new branch arrives through the
            // confirmation rule; a snapshot now would bypass it.
            if self.held.is_held(token_id) {
                continue;
            }
            self.send_snapshot(token_id, SnapshotCause::Reorg).await?;
        }
        Ok(())
    }

    /// Re-reads the next few tokens of the reconcile pass. A pass over
    /// thousands of tokens takes minutes on a remote RPC; in slices, new
    /// blocks (revocations) are followed between them.
    async fn reconcile_some(&mut self) -> StepResult {
        let head = latest_block(&mut self.rpc).await?;
        for _ in 0..RECONCILE_SLICE {
            let Some(&token_id) = self.reconcile_queue.first() else {
                break;
            };
            let snapshot = read_token(&mut self.rpc, self.config.contract, token_id, head).await?;
            // Only once read: a failed read is retried on the next turn.
            self.reconcile_queue.pop_first();
            self.known.insert(token_id, snapshot.owner);
            self.emit(ChainEvent::Snapshot { snapshot, cause: SnapshotCause::Reconcile }).await?;
        }
        Ok(())
    }

    async fn send_snapshot(&mut self, token_id: TokenId, cause: SnapshotCause) -> StepResult {
        let head = latest_block(&mut self.rpc).await?;
        let snapshot = read_token(&mut self.rpc, self.config.contract, token_id, head).await?;
        self.known.insert(token_id, snapshot.owner);
        self.emit(ChainEvent::Snapshot { snapshot, cause }).await
    }

    async fn block_hash(&mut self, number: u64) -> Result<Option<B256>, RpcError> {
        self.rpc
            .call("eth_getBlockByNumber", |p| async move {
                Ok(p.get_block_by_number(number.into()).await?.map(|block| block.header.hash))
            })
            .await
    }

    fn note_recent(&mut self, block: u64, token_id: TokenId) {
        self.recent_tokens.entry(block).or_default().insert(token_id);
    }

    fn prune_recent(&mut self, scanned: u64) {
        let keep_from = scanned.saturating_sub(self.config.max_reorg_depth);
        self.recent_hashes = self.recent_hashes.split_off(&keep_from);
        self.recent_tokens = self.recent_tokens.split_off(&keep_from);
    }

    async fn emit(&self, event: ChainEvent) -> StepResult {
        self.events.send(event).await.map_err(|_| StepError::Closed)
    }
}

/// An alloy log as the core's decoder takes it.
fn raw_log(log: &Log) -> RawLog {
    RawLog {
        address: log.inner.address.into(),
        topics: log.inner.data.topics().to_vec(),
        data: log.inner.data.data.clone(),
        block_number: log.block_number,
        block_hash: log.block_hash.map(BlockHash::from),
        tx_hash: log.transaction_hash.map(gateway_core::chain::TxHash::from),
        log_index: log.log_index,
        removed: log.removed,
    }
}

pub async fn latest_block(rpc: &mut RpcPool) -> Result<u64, RpcError> {
    rpc.call("eth_blockNumber", |p| async move { Ok(p.get_block_number().await?) }).await
}

/// Reads one token's state (`getNodeAccess`, `ownerOf`) at `block_number`
/// (both calls see the same state). A token the contract does not know (never
/// minted, burned, reorged out) is an inactive snapshot with no owner, not an error.
pub async fn read_token(
    rpc: &mut RpcPool,
    contract: Address,
    token_id: TokenId,
    block_number: u64,
) -> Result<TokenSnapshot, RpcError> {
    let id = U256::from(token_id);
    let access = rpc
        .call("getNodeAccess", |p| async move {
            let access = DstackAccessNFT::new(contract, p).getNodeAccess(id).block(block_number.into()).call().await?;
            Ok((access.nodeId, access.wireguardPublicKey, access.createdAt, access.isActive))
        })
        .await;
    let (node_id, public_key, created_at, is_active) = match access {
        Ok(access) => access,
        Err(RpcError::Rejected { .. }) => (String::new(), String::new(), U256::ZERO, false),
        Err(err) => return Err(err),
    };
    let owner = rpc
        .call("ownerOf", |p| async move {
            match DstackAccessNFT::new(contract, p).ownerOf(id).block(block_number.into()).call().await {
                Ok(owner) => Ok(Some(gateway_core::chain::Address::from(owner))),
                Err(err) => match CallError::from(err) {
                    CallError::Rejected(_) => Ok(None),
                    transport => Err(transport),
                },
            }
        })
        .await?;
    Ok(TokenSnapshot {
        token_id,
        node_id,
        public_key,
        created_at: u64::try_from(created_at).unwrap_or(u64::MAX),
        is_active,
        owner,
        block_number,
    })
}

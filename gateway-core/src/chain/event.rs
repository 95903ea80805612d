//! The values the chain follower hands to the registry (pure data): what
//! happened on chain, where, and how far the follower has got.

use serde::{Deserialize, Serialize};

use super::ids::{Address, BlockHash, TokenId, TxHash};

/// Where a log came from, for the audit log and for undoing reorged logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogMeta {
    pub block_number: u64,
    pub block_hash: BlockHash,
    pub tx_hash: TxHash,
    pub log_index: u64,
}

/// The authoritative state of one token, read with `getNodeAccess` and
/// `ownerOf` at `block_number` (reconcile, rekey, reorg recovery).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSnapshot {
    pub token_id: TokenId,
    pub node_id: String,
    /// Base64 WireGuard key as stored on chain (may be empty: unbound, or invalid: reported).
    pub public_key: String,
    pub created_at: u64,
    pub is_active: bool,
    /// `None` when `ownerOf` reverts (burned or never minted).
    pub owner: Option<Address>,
    pub block_number: u64,
}

/// One fact learned from the chain, in chain order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChainEvent {
    /// `NodeAccessGranted`, delivered once it has the configured confirmations.
    Granted {
        token_id: TokenId,
        node_id: String,
        owner: Address,
        public_key: String,
        meta: LogMeta,
    },
    /// `NodeAccessRevoked`, delivered at first sight (0 confirmations).
    Revoked { token_id: TokenId, node_id: String, meta: LogMeta },
    /// `NodeAccessTransferred`: the key is unbound until the new owner binds one.
    Transferred { token_id: TokenId, from: Address, to: Address, meta: LogMeta },
    /// `PublicKeyUpdated(owner, key)`: the event names no token, so the follower
    /// resolves it to the owner's tokens and sends their snapshots after it.
    KeyUpdated { owner: Address, public_key: String, meta: LogMeta },
    /// The chain's state of a token, which replaces whatever the registry holds.
    Snapshot { snapshot: TokenSnapshot, cause: SnapshotCause },
    /// Everything up to `block_number` has been delivered; `head` is the chain
    /// head the follower saw. The registry persists this as its cursor.
    Synced { block_number: u64, block_hash: BlockHash, head: u64 },
    /// No RPC endpoint answered; the access layer applies its staleness policy.
    Unavailable { error: String },
    /// An endpoint answered `eth_chainId` on connect (`endpoint` redacted):
    /// used when `served == expected`, refused until it serves that chain
    /// otherwise. Says nothing about tokens: for readiness and metrics.
    EndpointChecked { endpoint: String, expected: u64, served: u64 },
}

/// Why a snapshot was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotCause {
    Reconcile,
    Reorg,
    KeyUpdated,
    Backfill,
}

/// Where the follower resumes: everything up to and including `block_number`
/// has been delivered. The consumer persists it after applying every event
/// up to a `Synced`; a restart from it re-delivers at most what came after,
/// never less.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub block_number: u64,
    /// The hash of that block, to notice a reorg while we were away.
    pub block_hash: BlockHash,
}

//! Builders for scripted chain events (pure), shared by the tests of this
//! crate and, through the `test-support` feature, of the crates built on it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use crate::chain::{Address, BlockHash, ChainEvent, LogMeta, SnapshotCause, TokenId, TokenSnapshot, TxHash};
use crate::registry::{Network, Registry, WgKey};

/// The seed's deployment on Base, as a test contract address.
pub const CONTRACT: Address = Address([
    0x37, 0xd2, 0x10, 0x6b, 0xad, 0xb0, 0x1d, 0xd5, 0xbe, 0x19, 0x26, 0xe4, 0x5d, 0x17, 0x2c, 0xb4, 0x20, 0x3c, 0x41, 0x86,
]);

/// A distinct valid key per number.
pub fn key(n: u8) -> WgKey {
    WgKey([n; 32])
}

pub fn key_b64(n: u8) -> String {
    key(n).to_base64()
}

/// A distinct owner per number (`0x00..0n`).
pub fn owner(n: u8) -> Address {
    let mut bytes = [0u8; 20];
    bytes[19] = n;
    Address(bytes)
}

/// A distinct block hash per block number.
pub fn block_hash(block: u64) -> BlockHash {
    let mut bytes = [0xb0u8; 32];
    bytes[24..].copy_from_slice(&block.to_be_bytes());
    BlockHash(bytes)
}

pub fn network() -> Network {
    Network { cidr: "10.88.0.0/24".parse().expect("cidr"), dns_server: Ipv4Addr::new(10, 88, 0, 1) }
}

pub fn registry() -> Registry {
    Registry::new(CONTRACT, network())
}

pub fn meta(block: u64, log_index: u64) -> LogMeta {
    LogMeta {
        block_number: block,
        block_hash: block_hash(block),
        tx_hash: tx_hash(block, log_index),
        log_index,
    }
}

/// A distinct transaction hash per log position.
pub fn tx_hash(block: u64, log_index: u64) -> TxHash {
    let mut bytes = [0u8; 32];
    bytes[8..16].copy_from_slice(&block.to_be_bytes());
    bytes[24..].copy_from_slice(&log_index.to_be_bytes());
    TxHash(bytes)
}

pub fn granted(t: TokenId, key_n: u8, block: u64, idx: u64) -> ChainEvent {
    granted_raw(t, &format!("node-{t}"), &key_b64(key_n), block, idx)
}

pub fn granted_raw(t: TokenId, node_id: &str, public_key: &str, block: u64, idx: u64) -> ChainEvent {
    ChainEvent::Granted {
        token_id: t,
        node_id: node_id.to_string(),
        owner: owner(t as u8),
        public_key: public_key.to_string(),
        meta: meta(block, idx),
    }
}

pub fn revoked(t: TokenId, block: u64, idx: u64) -> ChainEvent {
    ChainEvent::Revoked { token_id: t, node_id: format!("node-{t}"), meta: meta(block, idx) }
}

pub fn transferred(t: TokenId, to: u8, block: u64, idx: u64) -> ChainEvent {
    ChainEvent::Transferred { token_id: t, from: owner(t as u8), to: owner(to), meta: meta(block, idx) }
}

pub fn key_updated(owner_n: u8, key_n: u8, block: u64, idx: u64) -> ChainEvent {
    ChainEvent::KeyUpdated { owner: owner(owner_n), public_key: key_b64(key_n), meta: meta(block, idx) }
}

/// A snapshot of token `t` owned by `owner(owner_n)` with key `key_n` (0 = unbound).
pub fn snapshot(t: TokenId, owner_n: u8, key_n: u8, active: bool, block: u64, cause: SnapshotCause) -> ChainEvent {
    ChainEvent::Snapshot {
        snapshot: TokenSnapshot {
            token_id: t,
            node_id: format!("node-{t}"),
            public_key: if key_n == 0 { String::new() } else { key_b64(key_n) },
            created_at: 1_700_000_000,
            is_active: active,
            owner: Some(owner(owner_n)),
            block_number: block,
        },
        cause,
    }
}

pub fn synced(block: u64) -> ChainEvent {
    ChainEvent::Synced { block_number: block, block_hash: block_hash(block), head: block }
}

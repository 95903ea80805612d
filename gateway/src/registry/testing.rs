//! Builders for scripted chain events, shared by the registry, access and
//! plan tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use super::{Network, Registry, WgKey};
use crate::chain::{ChainEvent, LogMeta, SnapshotCause, TokenId, TokenSnapshot};

pub const CONTRACT: &str = "0x37d2106badb01dd5be1926e45d172cb4203c4186";

/// A distinct valid key per number.
pub fn key(n: u8) -> WgKey {
    WgKey([n; 32])
}

pub fn key_b64(n: u8) -> String {
    key(n).to_base64()
}

pub fn owner(n: u8) -> String {
    format!("0x{:040x}", n)
}

pub fn network() -> Network {
    Network { cidr: "10.88.0.0/24".parse().expect("cidr"), dns_server: Ipv4Addr::new(10, 88, 0, 1) }
}

pub fn registry() -> Registry {
    Registry::new(CONTRACT.to_string(), network())
}

pub fn meta(block: u64, log_index: u64) -> LogMeta {
    LogMeta {
        block_number: block,
        block_hash: format!("0xb{block:063x}"),
        tx_hash: format!("0x{block:032x}{log_index:032x}"),
        log_index,
    }
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
    ChainEvent::Synced { block_number: block, block_hash: format!("0xb{block:063x}"), head: block }
}

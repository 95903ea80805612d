//! Fuzz target: chain-event decoding from raw logs (`chain::abi::decode_log`,
//! what the follower does with every `eth_getLogs` entry), then the decoded
//! event into a registry. The first byte picks the first topic among the
//! access events' signatures (or takes 32 bytes as it is), the second how
//! many more topics follow, the rest is the data. Decoding never panics,
//! and a decoded event the registry applies twice is a replay the second
//! time.
#![no_main]

use std::net::Ipv4Addr;

use alloy_primitives::{keccak256, Bytes, B256};
use gateway_core::chain::abi::{decode_log, RawLog};
use gateway_core::chain::{Address, BlockHash, ChainEvent, TxHash};
use gateway_core::registry::{Effect, Ipv4Cidr, Network, Registry};
use libfuzzer_sys::fuzz_target;

/// The topics the follower asks `eth_getLogs` for: the access contract's
/// four events and ERC-721's `Transfer`.
const SIGNATURES: [&str; 5] = [
    "NodeAccessGranted(uint256,string,address,string)",
    "NodeAccessRevoked(uint256,string)",
    "NodeAccessTransferred(uint256,address,address)",
    "PublicKeyUpdated(address,string)",
    "Transfer(address,address,uint256)",
];

fn word(bytes: &[u8]) -> B256 {
    let mut w = [0u8; 32];
    let n = bytes.len().min(32);
    w[..n].copy_from_slice(&bytes[..n]);
    B256::from(w)
}

fuzz_target!(|data: &[u8]| {
    let Some((&[pick, more], mut rest)) = data.split_first_chunk::<2>() else { return };
    let signatures: Vec<B256> = SIGNATURES.iter().map(|s| keccak256(s.as_bytes())).collect();
    let mut topics = Vec::new();
    match signatures.get(usize::from(pick) % (signatures.len() + 1)) {
        Some(sig) => topics.push(*sig),
        None => {
            topics.push(word(rest));
            rest = rest.get(32..).unwrap_or_default();
        }
    }
    for _ in 0..more % 4 {
        topics.push(word(rest));
        rest = rest.get(32..).unwrap_or_default();
    }
    let log = RawLog {
        address: Address([0x37; 20]),
        topics,
        data: Bytes::copy_from_slice(rest),
        block_number: Some(u64::from(pick)),
        block_hash: Some(BlockHash([0xb0; 32])),
        tx_hash: Some(TxHash([0x7a; 32])),
        log_index: Some(u64::from(more)),
        removed: false,
    };
    let Ok(event) = decode_log(&log) else { return };
    let Ok(cidr) = Ipv4Cidr::new(Ipv4Addr::new(10, 88, 0, 0), 24) else { panic!("the target's network") };
    let mut registry = Registry::new(Address([0x37; 20]), Network { cidr, dns_server: Ipv4Addr::new(10, 88, 0, 1) });
    registry.apply(&event, 100);
    let again = registry.apply(&event, 101);
    if !matches!(event, ChainEvent::KeyUpdated { .. }) {
        assert!(matches!(again.effect, Effect::Stale), "{event:?} applied twice: {:?}", again.effect);
    }
});

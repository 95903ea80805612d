//! The access contract's ABI (pure): its logs decoded into [`ChainEvent`]s,
//! the two reads the follower makes (`getNodeAccess`, `ownerOf`) encoded as
//! call data and their answers decoded, and revert data made readable.
//!
//! The types come from the committed solc artifact through alloy's `sol!`
//! without its RPC half: nothing here can talk to a node. The gateway crate
//! generates the RPC bindings from the same artifact for sending
//! transactions (`gateway node ...`).

use alloy_primitives::{Bytes, B256, U256};
use alloy_sol_types::{SolCall, SolError, SolEvent, SolEventInterface, SolInterface};

use super::event::{ChainEvent, LogMeta, TokenSnapshot};
use super::ids::{Address, BlockHash, TokenId, TxHash};

alloy_sol_types::sol!(
    #[derive(Debug)]
    #[allow(missing_docs, clippy::too_many_arguments)]
    DstackAccessNFT,
    "../contracts/out/DstackAccessNFT.json"
);

use DstackAccessNFT::DstackAccessNFTEvents as ContractEvent;

/// A log as an `eth_getLogs` answer carries it, in plain values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawLog {
    pub address: Address,
    pub topics: Vec<B256>,
    pub data: Bytes,
    /// `None` for a pending log (no block yet).
    pub block_number: Option<u64>,
    pub block_hash: Option<BlockHash>,
    pub tx_hash: Option<TxHash>,
    pub log_index: Option<u64>,
    /// Set by a node when the log's block left the canonical chain.
    pub removed: bool,
}

/// The topics of the four access events and ERC-721's `Transfer`, for the
/// `eth_getLogs` filter: a contract that transfers or burns with only the
/// standard event (the deployed one's source is not public) is followed too.
pub(crate) fn access_event_topics() -> Vec<B256> {
    vec![
        DstackAccessNFT::NodeAccessGranted::SIGNATURE_HASH,
        DstackAccessNFT::NodeAccessRevoked::SIGNATURE_HASH,
        DstackAccessNFT::NodeAccessTransferred::SIGNATURE_HASH,
        DstackAccessNFT::PublicKeyUpdated::SIGNATURE_HASH,
        DstackAccessNFT::Transfer::SIGNATURE_HASH,
    ]
}

/// Token ids beyond 128 bits cannot come from the reference contract; from
/// another contract they are reported, never truncated.
pub fn token_id_from_u256(value: U256) -> Option<TokenId> {
    u128::try_from(value).ok()
}

/// Why a log could not be turned into an event; the follower logs it and goes on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("log has no block number, hash or transaction hash (pending log)")]
    Pending,
    #[error("log does not decode as an access event: {0}")]
    Undecodable(String),
    #[error("token id {0} does not fit 128 bits")]
    TokenIdTooLarge(U256),
    #[error("not an access event")]
    OtherEvent,
}

fn log_meta(log: &RawLog) -> Result<LogMeta, DecodeError> {
    match (log.block_number, log.block_hash, log.tx_hash) {
        (Some(block_number), Some(block_hash), Some(tx_hash)) => {
            Ok(LogMeta { block_number, block_hash, tx_hash, log_index: log.log_index.unwrap_or_default() })
        }
        _ => Err(DecodeError::Pending),
    }
}

/// Decodes one log of the access contract. Key strings are passed on as they
/// are on chain: validating them is the registry's job, which reports them.
pub fn decode_log(log: &RawLog) -> Result<ChainEvent, DecodeError> {
    let meta = log_meta(log)?;
    let inner = alloy_primitives::Log::new_unchecked(log.address.into(), log.topics.clone(), log.data.clone());
    let decoded = ContractEvent::decode_log(&inner).map_err(|err| DecodeError::Undecodable(err.to_string()))?;
    let token = |value: U256| token_id_from_u256(value).ok_or(DecodeError::TokenIdTooLarge(value));
    Ok(match decoded.data {
        ContractEvent::NodeAccessGranted(e) => ChainEvent::Granted {
            token_id: token(e.tokenId)?,
            node_id: e.nodeId,
            owner: e.owner.into(),
            public_key: e.wireguardPublicKey,
            meta,
        },
        ContractEvent::NodeAccessRevoked(e) => ChainEvent::Revoked { token_id: token(e.tokenId)?, node_id: e.nodeId, meta },
        ContractEvent::NodeAccessTransferred(e) => {
            ChainEvent::Transferred { token_id: token(e.tokenId)?, from: e.from.into(), to: e.to.into(), meta }
        }
        ContractEvent::PublicKeyUpdated(e) => {
            ChainEvent::KeyUpdated { owner: e.owner.into(), public_key: e.wireguardPublicKey, meta }
        }
        // A mint: `NodeAccessGranted` says more (the node id and key).
        ContractEvent::Transfer(e) if e.from.is_zero() => return Err(DecodeError::OtherEvent),
        // ERC-721's own word for a transfer, and for a burn (to the zero
        // address): the key is unbound as after `NodeAccessTransferred`,
        // which the reference contract emits beside it (the registry takes
        // the second of the pair as a replay).
        ContractEvent::Transfer(e) => {
            ChainEvent::Transferred { token_id: token(e.tokenId)?, from: e.from.into(), to: e.to.into(), meta }
        }
        _ => return Err(DecodeError::OtherEvent),
    })
}

/// `getNodeAccess(tokenId)` as call data.
pub(crate) fn get_node_access_call(token_id: TokenId) -> Bytes {
    DstackAccessNFT::getNodeAccessCall { tokenId: U256::from(token_id) }.abi_encode().into()
}

/// `ownerOf(tokenId)` as call data.
pub(crate) fn owner_of_call(token_id: TokenId) -> Bytes {
    DstackAccessNFT::ownerOfCall { tokenId: U256::from(token_id) }.abi_encode().into()
}

/// What `getNodeAccess` returns, without the token id it was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeAccess {
    pub node_id: String,
    pub public_key: String,
    pub created_at: u64,
    pub is_active: bool,
}

impl NodeAccess {
    /// What a token the contract does not know reads as (`getNodeAccess`
    /// reverted: never minted, burned, reorged out): inactive, nothing bound.
    pub(crate) fn unknown() -> Self {
        NodeAccess { node_id: String::new(), public_key: String::new(), created_at: 0, is_active: false }
    }

    /// The snapshot of `token_id` at `block_number`, with its owner (`None`
    /// when `ownerOf` reverted).
    pub(crate) fn snapshot(self, token_id: TokenId, owner: Option<Address>, block_number: u64) -> TokenSnapshot {
        TokenSnapshot {
            token_id,
            node_id: self.node_id,
            public_key: self.public_key,
            created_at: self.created_at,
            is_active: self.is_active,
            owner,
            block_number,
        }
    }
}

/// The answer to a call the contract did not return well-formed data for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{call} returned data that does not decode: {reason}")]
pub(crate) struct ReturnDecodeError {
    pub call: &'static str,
    pub reason: String,
}

pub(crate) fn decode_node_access(data: &[u8]) -> Result<NodeAccess, ReturnDecodeError> {
    let access = DstackAccessNFT::getNodeAccessCall::abi_decode_returns(data)
        .map_err(|err| ReturnDecodeError { call: "getNodeAccess", reason: err.to_string() })?;
    Ok(NodeAccess {
        node_id: access.nodeId,
        public_key: access.wireguardPublicKey,
        created_at: u64::try_from(access.createdAt).unwrap_or(u64::MAX),
        is_active: access.isActive,
    })
}

pub(crate) fn decode_owner(data: &[u8]) -> Result<Address, ReturnDecodeError> {
    DstackAccessNFT::ownerOfCall::abi_decode_returns(data)
        .map(Address::from)
        .map_err(|err| ReturnDecodeError { call: "ownerOf", reason: err.to_string() })
}

/// The reason revert data gives: `Error(string)`, a panic code, or one of
/// the contract's custom errors.
pub fn describe_revert(data: &[u8]) -> String {
    // alloy also reads bare UTF-8 as a reason; only the standard selectors count here.
    let standard = data.starts_with(&alloy_sol_types::Revert::SELECTOR) || data.starts_with(&alloy_sol_types::Panic::SELECTOR);
    if let Some(reason) = alloy_sol_types::decode_revert_reason(data).filter(|_| standard) {
        // alloy renders `Error(string)` as "revert: <reason>"; callers say "reverted" already.
        return reason.strip_prefix("revert: ").map(str::to_string).unwrap_or(reason);
    }
    match DstackAccessNFT::DstackAccessNFTErrors::abi_decode(data) {
        Ok(custom) => unwrap_variant(&format!("{custom:?}")),
        Err(_) => format!("unrecognised revert data {}", Bytes::copy_from_slice(data)),
    }
}

/// `Name(Name { field: 1 })`, how the generated error enum prints, becomes `Name { field: 1 }`.
fn unwrap_variant(debug: &str) -> String {
    if let Some((name, rest)) = debug.split_once('(') {
        if let Some(inner) = rest.strip_suffix(')') {
            if inner.starts_with(name) {
                return inner.to_string();
            }
        }
    }
    debug.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use alloy_primitives::LogData;

    fn raw(data: LogData) -> RawLog {
        let (topics, data) = data.split();
        RawLog {
            address: Address::ZERO,
            topics,
            data,
            block_hash: Some(BlockHash([0x11; 32])),
            block_number: Some(9),
            tx_hash: Some(TxHash([0x22; 32])),
            log_index: Some(3),
            removed: false,
        }
    }

    #[test]
    fn decodes_a_grant_with_its_provenance() {
        let owner = alloy_primitives::Address::repeat_byte(0xaa);
        let event = DstackAccessNFT::NodeAccessGranted {
            tokenId: U256::from(5),
            nodeId: "node-5".into(),
            owner,
            wireguardPublicKey: "not even base64".into(),
        };
        let decoded = decode_log(&raw(event.encode_log_data())).unwrap();
        let ChainEvent::Granted { token_id, node_id, owner: got_owner, public_key, meta } = decoded else {
            panic!("expected a grant, got {decoded:?}");
        };
        assert_eq!((token_id, node_id.as_str()), (5, "node-5"));
        assert_eq!(got_owner, Address([0xaa; 20]));
        assert_eq!(public_key, "not even base64", "malformed keys are passed on for the registry to report");
        assert_eq!((meta.block_number, meta.log_index), (9, 3));
        assert_eq!(meta.tx_hash, TxHash([0x22; 32]));
    }

    #[test]
    fn erc721_transfers_and_burns_unbind_and_mints_are_left_to_the_grant() {
        let (a, b) = (alloy_primitives::Address::repeat_byte(0xaa), alloy_primitives::Address::repeat_byte(0xbb));
        let transfer = |from, to| raw(DstackAccessNFT::Transfer { from, to, tokenId: U256::from(7) }.encode_log_data());
        assert!(access_event_topics().contains(&DstackAccessNFT::Transfer::SIGNATURE_HASH), "the filter asks for Transfer");
        let moved = decode_log(&transfer(a, b)).unwrap();
        assert!(matches!(moved, ChainEvent::Transferred { token_id: 7, from, to, .. } if from == Address([0xaa; 20]) && to == Address([0xbb; 20])), "{moved:?}");
        let burnt = decode_log(&transfer(a, alloy_primitives::Address::ZERO)).unwrap();
        assert!(matches!(burnt, ChainEvent::Transferred { token_id: 7, to, .. } if to.is_zero()), "{burnt:?}");
        assert_eq!(decode_log(&transfer(alloy_primitives::Address::ZERO, b)), Err(DecodeError::OtherEvent));
        // ERC-20's Transfer has the same topic and two indexed fields: not ours.
        let erc20 = LogData::new_unchecked(vec![DstackAccessNFT::Transfer::SIGNATURE_HASH, B256::ZERO, B256::ZERO], U256::from(5).to_be_bytes_vec().into());
        assert!(matches!(decode_log(&raw(erc20)), Err(DecodeError::Undecodable(_))));
    }

    #[test]
    fn custom_errors_print_once() {
        assert_eq!(unwrap_variant("ERC721NonexistentToken(ERC721NonexistentToken { tokenId: 7 })"), "ERC721NonexistentToken { tokenId: 7 }");
        assert_eq!(unwrap_variant("Other(3)"), "Other(3)");
    }

    #[test]
    fn a_token_id_beyond_128_bits_is_reported_not_truncated() {
        let event = DstackAccessNFT::NodeAccessRevoked { tokenId: U256::MAX, nodeId: "x".into() };
        assert_eq!(decode_log(&raw(event.encode_log_data())), Err(DecodeError::TokenIdTooLarge(U256::MAX)));
    }

    #[test]
    fn foreign_and_pending_logs_are_errors_not_panics() {
        let garbage = LogData::new_unchecked(vec![B256::repeat_byte(7)], vec![1, 2, 3].into());
        assert!(matches!(decode_log(&raw(garbage)), Err(DecodeError::Undecodable(_))));
        let mut pending = raw(DstackAccessNFT::NodeAccessRevoked { tokenId: U256::from(1), nodeId: "x".into() }.encode_log_data());
        pending.block_hash = None;
        assert_eq!(decode_log(&pending), Err(DecodeError::Pending));
    }

    #[test]
    fn reads_round_trip_through_call_and_return_data() {
        let call = get_node_access_call(7);
        assert_eq!(&call[..4], &DstackAccessNFT::getNodeAccessCall::SELECTOR);
        let returned = DstackAccessNFT::getNodeAccessCall::abi_encode_returns(&DstackAccessNFT::getNodeAccessReturn {
            nodeId: "n".into(),
            wireguardPublicKey: "k".into(),
            createdAt: U256::from(1_700_000_000u64),
            isActive: true,
        });
        let access = decode_node_access(&returned).unwrap();
        assert_eq!(access, NodeAccess { node_id: "n".into(), public_key: "k".into(), created_at: 1_700_000_000, is_active: true });
        let owner = DstackAccessNFT::ownerOfCall::abi_encode_returns(&alloy_primitives::Address::repeat_byte(3));
        assert_eq!(decode_owner(&owner).unwrap(), Address([3; 20]));
        assert!(decode_owner(&[1, 2]).is_err(), "short data is an error, not a zero address");
        assert_eq!(&owner_of_call(7)[..4], &DstackAccessNFT::ownerOfCall::SELECTOR);
    }

    #[test]
    fn revert_data_is_made_readable() {
        let data = alloy_sol_types::Revert::from("caller does not own the token").abi_encode();
        assert_eq!(describe_revert(&data), "caller does not own the token");
        let garbage = describe_revert(&[0xde, 0xad]);
        assert!(garbage.contains("0xdead"), "{garbage}");
    }
}

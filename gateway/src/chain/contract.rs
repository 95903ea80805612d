//! alloy bindings of the access contract, generated from the committed solc
//! artifact, and the conversions from its logs and calls to plain values.

use alloy::primitives::{Address, B256, U256};
use alloy::rpc::types::Log;
use alloy::sol_types::SolEventInterface;

use super::event::{ChainEvent, LogMeta, TokenId};

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    #[allow(missing_docs, clippy::too_many_arguments)]
    DstackAccessNFT,
    "../contracts/out/DstackAccessNFT.json"
);

pub use DstackAccessNFT::DstackAccessNFTEvents as ContractEvent;

/// The topics of the four access events, for the `eth_getLogs` filter.
pub fn access_event_topics() -> Vec<B256> {
    use alloy::sol_types::SolEvent;
    vec![
        DstackAccessNFT::NodeAccessGranted::SIGNATURE_HASH,
        DstackAccessNFT::NodeAccessRevoked::SIGNATURE_HASH,
        DstackAccessNFT::NodeAccessTransferred::SIGNATURE_HASH,
        DstackAccessNFT::PublicKeyUpdated::SIGNATURE_HASH,
    ]
}

/// Lowercase `0x` hex, the form used in every [`ChainEvent`].
pub fn address_string(address: Address) -> String {
    format!("{address:#x}")
}

pub fn hash_string(hash: B256) -> String {
    format!("{hash:#x}")
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

pub fn log_meta(log: &Log) -> Result<LogMeta, DecodeError> {
    match (log.block_number, log.block_hash, log.transaction_hash) {
        (Some(block_number), Some(block_hash), Some(tx_hash)) => Ok(LogMeta {
            block_number,
            block_hash: hash_string(block_hash),
            tx_hash: hash_string(tx_hash),
            log_index: log.log_index.unwrap_or_default(),
        }),
        _ => Err(DecodeError::Pending),
    }
}

/// Decodes one log of the access contract. Key strings are passed on as they
/// are on chain: validating them is the registry's job, which reports them.
pub fn decode_log(log: &Log) -> Result<ChainEvent, DecodeError> {
    let meta = log_meta(log)?;
    let decoded =
        ContractEvent::decode_log(&log.inner).map_err(|err| DecodeError::Undecodable(err.to_string()))?;
    let token = |value: U256| token_id_from_u256(value).ok_or(DecodeError::TokenIdTooLarge(value));
    Ok(match decoded.data {
        ContractEvent::NodeAccessGranted(e) => ChainEvent::Granted {
            token_id: token(e.tokenId)?,
            node_id: e.nodeId,
            owner: address_string(e.owner),
            public_key: e.wireguardPublicKey,
            meta,
        },
        ContractEvent::NodeAccessRevoked(e) => {
            ChainEvent::Revoked { token_id: token(e.tokenId)?, node_id: e.nodeId, meta }
        }
        ContractEvent::NodeAccessTransferred(e) => ChainEvent::Transferred {
            token_id: token(e.tokenId)?,
            from: address_string(e.from),
            to: address_string(e.to),
            meta,
        },
        ContractEvent::PublicKeyUpdated(e) => {
            ChainEvent::KeyUpdated { owner: address_string(e.owner), public_key: e.wireguardPublicKey, meta }
        }
        _ => return Err(DecodeError::OtherEvent),
    })
}

/// The reason a reverted call or transaction gave, decoded from its revert
/// data: `Error(string)`, a panic code, or one of the contract's custom errors.
pub fn revert_reason(err: &alloy::contract::Error) -> Option<String> {
    let data = err.as_revert_data()?;
    if let Some(reason) = alloy::sol_types::decode_revert_reason(&data) {
        return Some(reason);
    }
    use alloy::sol_types::SolInterface;
    match DstackAccessNFT::DstackAccessNFTErrors::abi_decode(&data) {
        Ok(custom) => Some(format!("{custom:?}")),
        Err(_) => Some(format!("unrecognised revert data {data}")),
    }
}

/// Whether the node answered that the call reverted, as opposed to not answering.
pub fn is_revert(err: &alloy::contract::Error) -> bool {
    if err.as_revert_data().is_some() {
        return true;
    }
    match err {
        alloy::contract::Error::TransportError(transport) => transport.is_error_resp(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{address, b256, LogData};
    use alloy::sol_types::SolEvent;

    fn rpc_log(data: LogData) -> Log {
        Log {
            inner: alloy::primitives::Log { address: Address::ZERO, data },
            block_hash: Some(b256!("0x1111111111111111111111111111111111111111111111111111111111111111")),
            block_number: Some(9),
            block_timestamp: None,
            transaction_hash: Some(b256!("0x2222222222222222222222222222222222222222222222222222222222222222")),
            transaction_index: Some(0),
            log_index: Some(3),
            removed: false,
        }
    }

    #[test]
    fn decodes_a_grant_with_its_provenance() {
        let owner = address!("0x00000000000000000000000000000000000000aa");
        let event = DstackAccessNFT::NodeAccessGranted {
            tokenId: U256::from(5),
            nodeId: "node-5".into(),
            owner,
            wireguardPublicKey: "not even base64".into(),
        };
        let decoded = decode_log(&rpc_log(event.encode_log_data())).unwrap();
        let ChainEvent::Granted { token_id, node_id, owner: got_owner, public_key, meta } = decoded else {
            panic!("expected a grant, got {decoded:?}");
        };
        assert_eq!((token_id, node_id.as_str()), (5, "node-5"));
        assert_eq!(got_owner, "0x00000000000000000000000000000000000000aa");
        assert_eq!(public_key, "not even base64", "malformed keys are passed on for the registry to report");
        assert_eq!(meta.block_number, 9);
        assert_eq!(meta.log_index, 3);
        assert!(meta.tx_hash.starts_with("0x2222"));
    }

    #[test]
    fn a_token_id_beyond_128_bits_is_reported_not_truncated() {
        let event = DstackAccessNFT::NodeAccessRevoked { tokenId: U256::MAX, nodeId: "x".into() };
        assert_eq!(decode_log(&rpc_log(event.encode_log_data())), Err(DecodeError::TokenIdTooLarge(U256::MAX)));
    }

    #[test]
    fn foreign_and_pending_logs_are_errors_not_panics() {
        let garbage = LogData::new_unchecked(vec![B256::repeat_byte(7)], vec![1, 2, 3].into());
        assert!(matches!(decode_log(&rpc_log(garbage)), Err(DecodeError::Undecodable(_))));
        let mut pending = rpc_log(DstackAccessNFT::NodeAccessRevoked { tokenId: U256::from(1), nodeId: "x".into() }.encode_log_data());
        pending.block_hash = None;
        assert_eq!(decode_log(&pending), Err(DecodeError::Pending));
    }
}

//! alloy RPC bindings of the access contract, generated from the committed
//! solc artifact, for sending transactions and typed calls (`gateway node
//! ...`, tests). The follower does not use them: it asks for raw calls and
//! decodes logs and answers with `gateway_core::chain::abi`, built from the
//! same artifact.

use alloy::primitives::{Address, B256};

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    #[allow(missing_docs, clippy::too_many_arguments)]
    DstackAccessNFT,
    "../contracts/out/DstackAccessNFT.json"
);

pub use gateway_core::chain::abi::token_id_from_u256;

/// Lowercase `0x` hex, the form every chain value takes in this gateway.
pub fn address_string(address: Address) -> String {
    gateway_core::chain::Address::from(address).to_string()
}

pub fn hash_string(hash: B256) -> String {
    gateway_core::chain::TxHash::from(hash).to_string()
}

/// The reason a reverted call or transaction gave, decoded from its revert
/// data: `Error(string)`, a panic code, or one of the contract's custom errors.
pub fn revert_reason(err: &alloy::contract::Error) -> Option<String> {
    err.as_revert_data().map(|data| gateway_core::chain::abi::describe_revert(&data))
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

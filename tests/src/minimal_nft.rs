//! The `MinimalAccessNFT` test fixture (contracts/MinimalAccessNFT.sol): an
//! access contract whose transfers and burns emit only ERC-721's `Transfer`
//! and leave the key bound. alloy bindings from its committed artifact and a
//! deploy helper (I/O edge: alloy).

use alloy::primitives::Address;
use alloy::providers::DynProvider;

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    #[allow(missing_docs, clippy::too_many_arguments)]
    MinimalAccessNFT,
    "../contracts/out/MinimalAccessNFT.json"
);

/// Deploys the fixture with `provider`'s signer as its owner; returns its address and block.
pub async fn deploy(provider: &DynProvider) -> anyhow::Result<(Address, u64)> {
    let pending = MinimalAccessNFT::deploy_builder(provider.clone()).send().await?;
    let receipt = pending.get_receipt().await?;
    anyhow::ensure!(receipt.status(), "MinimalAccessNFT deployment reverted");
    let address = receipt.contract_address.ok_or_else(|| anyhow::anyhow!("no contract address in the receipt"))?;
    Ok((address, receipt.block_number.unwrap_or_default()))
}

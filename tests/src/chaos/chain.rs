//! The soak's side of the chain: transactions sent as the contract's
//! administrator and the two token owners, reorgs made with anvil's
//! `evm_snapshot`/`evm_revert`, and the truth read back straight from the
//! contract (`getNodeAccess`, `ownerOf`), never through the gateway.

use std::collections::BTreeMap;

use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use anyhow::{Context, Result};
use gateway::node::admin::{load_signer, Session, TxOutcome};

alloy::sol! {
    #[sol(rpc)]
    interface AccessView {
        function getNodeAccess(uint256 tokenId) external view
            returns (string nodeId, string wireguardPublicKey, uint256 createdAt, bool isActive);
        function ownerOf(uint256 tokenId) external view returns (address);
    }
}

/// A token as the contract holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnChain {
    pub owner: Address,
    pub key: String,
    pub active: bool,
}

impl OnChain {
    /// What the gateway must admit: an active token with a key bound (the
    /// contract keeps keys unique and well-formed, so nothing else decides).
    pub fn admitted(&self) -> bool {
        self.active && !self.key.is_empty()
    }
}

/// Connections to anvil: one per signer (0 administers, 1 and 2 own
/// tokens) and a read-only one for the truth.
pub struct Chain {
    pub contract: Address,
    pub owners: [Address; 3],
    signers: Vec<Session>,
    reader: DynProvider,
}

impl Chain {
    pub async fn connect(rpc: &str, contract: &str, signer_files: &[std::path::PathBuf], owners: &[&str]) -> Result<Self> {
        let mut signers = Vec::new();
        for file in signer_files {
            signers.push(Session::with_signer(rpc, load_signer(file)?).await?);
        }
        let reader = ProviderBuilder::new().connect(rpc).await.with_context(|| format!("connecting to {rpc}"))?.erased();
        Ok(Chain {
            contract: contract.parse()?,
            owners: [owners[0].parse()?, owners[1].parse()?, owners[2].parse()?],
            signers,
            reader,
        })
    }

    pub async fn mint(&self, owner: usize, node_id: &str, key: &str) -> Result<(u64, TxOutcome)> {
        let minted = self.signers[0].mint(self.contract, self.owners[owner], node_id, key, "").await?;
        Ok((u64::try_from(minted.token_id)?, minted.tx))
    }

    pub async fn revoke(&self, token: u64) -> Result<TxOutcome> {
        self.signers[0].revoke(self.contract, U256::from(token)).await
    }

    /// `transferFrom` signed by the token's owner `from`.
    pub async fn transfer(&self, from: usize, token: u64, to: usize) -> Result<TxOutcome> {
        self.signers[from].transfer(self.contract, U256::from(token), self.owners[to]).await
    }

    /// `updatePublicKey` signed by the token's owner.
    pub async fn update_key(&self, owner: usize, token: u64, key: &str) -> Result<TxOutcome> {
        self.signers[owner].rekey(self.contract, U256::from(token), key).await
    }

    /// `evm_snapshot`: the id to revert to.
    pub async fn snapshot(&self) -> Result<U256> {
        Ok(self.reader.raw_request("evm_snapshot".into(), ()).await?)
    }

    /// `evm_revert` to `id`, then `blocks` empty blocks mined at once, so
    /// the new branch outgrows the one it replaces as a real reorg does.
    pub async fn revert_and_mine(&self, id: U256, blocks: u64) -> Result<()> {
        let reverted: bool = self.reader.raw_request("evm_revert".into(), (id,)).await?;
        anyhow::ensure!(reverted, "evm_revert {id} refused");
        let _: serde_json::Value = self.reader.raw_request("anvil_mine".into(), (U256::from(blocks),)).await?;
        Ok(())
    }

    pub async fn head(&self) -> Result<u64> {
        Ok(self.reader.get_block_number().await?)
    }

    /// Every token `1..=last` as the contract says now (a token reorged out
    /// of existence is absent).
    pub async fn truth(&self, last: u64) -> Result<BTreeMap<u64, OnChain>> {
        let view = AccessView::new(self.contract, self.reader.clone());
        let mut out = BTreeMap::new();
        for token in 1..=last {
            let Ok(owner) = view.ownerOf(U256::from(token)).call().await else { continue };
            let access = view.getNodeAccess(U256::from(token)).call().await?;
            out.insert(token, OnChain { owner, key: access.wireguardPublicKey, active: access.isActive });
        }
        Ok(out)
    }
}

//! Transactions and reads against the access contract for the `gateway node`
//! commands and the tests (I/O edge: alloy). Reverts come back with their reason.

use std::path::Path;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, TransactionReceipt};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;
use anyhow::Context;
use serde::Serialize;

use crate::chain::contract::{self, DstackAccessNFT};
use crate::chain::rpc::RpcPool;
use gateway_core::chain::range::{split_ranges, DEFAULT_MAX_BLOCK_SPAN};
use gateway_core::chain::{TokenId, TokenSnapshot};

/// Reads the signer's hex private key from a file: a key never appears on a command line.
pub fn load_signer(path: &Path) -> anyhow::Result<PrivateKeySigner> {
    crate::node::keys::warn_if_exposed(path);
    let text = std::fs::read_to_string(path).with_context(|| format!("reading signer key file {}", path.display()))?;
    let hex = text.trim();
    hex.strip_prefix("0x")
        .unwrap_or(hex)
        .parse::<PrivateKeySigner>()
        .map_err(|_| anyhow::anyhow!("signer key file {} does not hold a hex secp256k1 private key", path.display()))
}

/// A connection to the chain, with a wallet when transactions are to be sent.
#[derive(Clone)]
pub struct Session {
    provider: DynProvider,
    sender: Option<Address>,
}

/// Where a transaction landed.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TxOutcome {
    pub tx_hash: String,
    pub block_number: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Deployed {
    pub address: String,
    #[serde(flatten)]
    pub tx: TxOutcome,
}

#[derive(Clone, Debug, Serialize)]
pub struct Minted {
    pub token_id: TokenId,
    pub node_id: String,
    pub owner: String,
    pub public_key: String,
    #[serde(flatten)]
    pub tx: TxOutcome,
}

/// The contract's owner after an ownership command, and the owner waiting to accept, if any.
#[derive(Clone, Debug, Serialize)]
pub struct Ownership {
    pub owner: String,
    pub pending_owner: Option<String>,
    #[serde(flatten)]
    pub tx: TxOutcome,
}

#[derive(Clone, Debug, Serialize)]
pub struct TokenInfo {
    #[serde(flatten)]
    pub snapshot: TokenSnapshot,
    pub token_uri: String,
}

impl Session {
    pub async fn read_only(rpc_url: &str) -> anyhow::Result<Self> {
        let provider = ProviderBuilder::new().connect(rpc_url).await.with_context(|| format!("connecting to {rpc_url}"))?;
        Ok(Self { provider: provider.erased(), sender: None })
    }

    pub async fn with_signer(rpc_url: &str, signer: PrivateKeySigner) -> anyhow::Result<Self> {
        let sender = signer.address();
        // The nonce is asked of the node for every transaction: the default cache
        // reserves one even when gas estimation then fails on a revert, and the
        // next transaction would wait forever behind the gap.
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(EthereumWallet::from(signer))
            .connect(rpc_url)
            .await
            .with_context(|| format!("connecting to {rpc_url}"))?;
        Ok(Self { provider: provider.erased(), sender: Some(sender) })
    }

    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    fn contract(&self, address: Address) -> DstackAccessNFT::DstackAccessNFTInstance<DynProvider> {
        DstackAccessNFT::new(address, self.provider.clone())
    }

    fn sender(&self) -> anyhow::Result<Address> {
        self.sender.context("this command sends a transaction: give --signer-key or GATEWAY_SIGNER_KEY")
    }

    pub async fn deploy(&self) -> anyhow::Result<Deployed> {
        self.sender()?;
        let pending = DstackAccessNFT::deploy_builder(self.provider.clone()).send().await.map_err(explain)?;
        let receipt = confirmed(pending.get_receipt().await.context("waiting for the deployment receipt")?)?;
        let address = receipt.contract_address.context("deployment receipt names no contract address")?;
        Ok(Deployed { address: contract::address_string(address), tx: outcome(&receipt) })
    }

    pub async fn mint(
        &self,
        address: Address,
        owner: Address,
        node_id: &str,
        public_key: &str,
        token_uri: &str,
    ) -> anyhow::Result<Minted> {
        self.sender()?;
        let access = self.contract(address);
        let call = access.mintNodeAccess(
            owner,
            node_id.to_string(),
            public_key.to_string(),
            token_uri.to_string(),
        );
        let receipt = confirmed(send(call).await?)?;
        let granted = receipt
            .inner
            .logs()
            .iter()
            .find_map(|log| DstackAccessNFT::NodeAccessGranted::decode_log(&log.inner).ok())
            .context("the mint transaction emitted no NodeAccessGranted")?;
        Ok(Minted {
            token_id: contract::token_id_from_u256(granted.tokenId).context("token id does not fit 128 bits")?,
            node_id: granted.data.nodeId.clone(),
            owner: contract::address_string(granted.owner),
            public_key: granted.data.wireguardPublicKey.clone(),
            tx: outcome(&receipt),
        })
    }

    pub async fn revoke(&self, address: Address, token_id: U256) -> anyhow::Result<TxOutcome> {
        self.sender()?;
        let access = self.contract(address);
        let receipt = confirmed(send(access.revokeNodeAccess(token_id)).await?)?;
        Ok(outcome(&receipt))
    }

    /// Transfers the signer's token; the contract unbinds its key.
    pub async fn transfer(&self, address: Address, token_id: U256, to: Address) -> anyhow::Result<TxOutcome> {
        let from = self.sender()?;
        let access = self.contract(address);
        let receipt = confirmed(send(access.transferFrom(from, to, token_id)).await?)?;
        Ok(outcome(&receipt))
    }

    /// Binds a new key to the signer's token.
    pub async fn rekey(&self, address: Address, token_id: U256, public_key: &str) -> anyhow::Result<TxOutcome> {
        self.sender()?;
        let access = self.contract(address);
        let call = access.updatePublicKey(token_id, public_key.to_string());
        let receipt = confirmed(send(call).await?)?;
        Ok(outcome(&receipt))
    }

    /// `transferContractOwnership` (the seed's interface), then who owns the contract and who
    /// is pending: on the reference contract the handover waits for `accept_ownership`.
    pub async fn transfer_contract_ownership(&self, address: Address, new_owner: Address) -> anyhow::Result<Ownership> {
        self.sender()?;
        let receipt = confirmed(send(self.contract(address).transferContractOwnership(new_owner)).await?)?;
        self.ownership(address, outcome(&receipt)).await
    }

    /// The pending owner (the signer) takes the contract over (Ownable2Step's `acceptOwnership`).
    pub async fn accept_ownership(&self, address: Address) -> anyhow::Result<Ownership> {
        self.sender()?;
        let receipt = confirmed(send(self.contract(address).acceptOwnership()).await?)?;
        self.ownership(address, outcome(&receipt)).await
    }

    async fn ownership(&self, address: Address, tx: TxOutcome) -> anyhow::Result<Ownership> {
        let contract = self.contract(address);
        let owner = contract.owner().call().await.map_err(explain).context("reading owner()")?;
        // A contract without a two-step handover has no `pendingOwner()`: that is not an error.
        let pending_owner = contract
            .pendingOwner()
            .call()
            .await
            .ok()
            .filter(|pending| !pending.is_zero())
            .map(contract::address_string);
        Ok(Ownership { owner: contract::address_string(owner), pending_owner, tx })
    }

    pub async fn token_id_of_node(&self, address: Address, node_id: &str) -> anyhow::Result<U256> {
        self.contract(address)
            .getTokenIdByNodeId(node_id.to_string())
            .call()
            .await
            .map_err(explain)
            .with_context(|| format!("looking up node id {node_id:?}"))
    }

    pub async fn info(&self, address: Address, token_id: U256) -> anyhow::Result<TokenInfo> {
        let contract = self.contract(address);
        let access = contract.getNodeAccess(token_id).call().await.map_err(explain)?;
        let owner = contract.ownerOf(token_id).call().await.map_err(explain)?;
        let token_uri = contract.tokenURI(token_id).call().await.map_err(explain)?;
        let block_number = self.provider.get_block_number().await.context("eth_blockNumber")?;
        Ok(TokenInfo {
            snapshot: TokenSnapshot {
                token_id: contract::token_id_from_u256(token_id).context("token id does not fit 128 bits")?,
                node_id: access.nodeId,
                public_key: access.wireguardPublicKey,
                created_at: u64::try_from(access.createdAt).unwrap_or(u64::MAX),
                is_active: access.isActive,
                owner: Some(owner.into()),
                block_number,
            },
            token_uri,
        })
    }

    /// Every token ever granted, found from `NodeAccessGranted` logs since
    /// `from_block` (the contract has no enumeration), with its current state.
    pub async fn list(&self, rpc_url: &str, address: Address, from_block: u64) -> anyhow::Result<Vec<TokenSnapshot>> {
        let head = self.provider.get_block_number().await.context("eth_blockNumber")?;
        let mut tokens = std::collections::BTreeSet::new();
        for range in split_ranges(from_block, head, DEFAULT_MAX_BLOCK_SPAN) {
            let filter = Filter::new()
                .address(address)
                .event_signature(DstackAccessNFT::NodeAccessGranted::SIGNATURE_HASH)
                .from_block(range.from)
                .to_block(range.to);
            for log in self.provider.get_logs(&filter).await.context("eth_getLogs")? {
                match DstackAccessNFT::NodeAccessGranted::decode_log(&log.inner) {
                    Ok(granted) => match contract::token_id_from_u256(granted.tokenId) {
                        Some(id) => {
                            tokens.insert(id);
                        }
                        None => tracing::warn!(token_id = %granted.tokenId, "skipping a token id beyond 128 bits"),
                    },
                    Err(err) => tracing::warn!(error = %err, "skipping an undecodable NodeAccessGranted log"),
                }
            }
        }
        let mut rpc = RpcPool::new(
            &[rpc_url.to_string()],
            gateway_core::chain::backoff::Backoff::default(),
            crate::chain::rpc::DEFAULT_CALL_TIMEOUT,
        )?;
        let mut snapshots = Vec::with_capacity(tokens.len());
        for token_id in tokens {
            snapshots.push(crate::chain::rpc::read_token(&mut rpc, address, token_id, head).await?);
        }
        Ok(snapshots)
    }
}

async fn send<P, D>(call: alloy::contract::CallBuilder<P, D>) -> anyhow::Result<TransactionReceipt>
where
    P: Provider,
    D: alloy::contract::CallDecoder,
{
    let pending = call.send().await.map_err(explain)?;
    pending.get_receipt().await.context("waiting for the transaction receipt")
}

fn confirmed(receipt: TransactionReceipt) -> anyhow::Result<TransactionReceipt> {
    anyhow::ensure!(receipt.status(), "transaction {} failed on chain (status 0)", receipt.transaction_hash);
    Ok(receipt)
}

fn outcome(receipt: &TransactionReceipt) -> TxOutcome {
    TxOutcome {
        tx_hash: contract::hash_string(receipt.transaction_hash),
        block_number: receipt.block_number.unwrap_or_default(),
    }
}

/// Turns a contract error into one that says why the contract refused.
fn explain(err: alloy::contract::Error) -> anyhow::Error {
    match contract::revert_reason(&err) {
        Some(reason) => anyhow::anyhow!("reverted: {reason}"),
        None => anyhow::Error::new(err),
    }
}

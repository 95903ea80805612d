//! The chain the gateway follows, settled at start (I/O edge): the expected
//! chain id (configured, else the state dir's pin, else learned from the
//! first endpoint that answers and pinned there), and the contract's code on
//! that chain. Every endpoint's `eth_chainId` is checked again on each
//! connect by the RPC pool. The rules are `gateway_core::chain::chain_id`.

use std::path::Path;
use std::time::Duration;

use alloy::providers::Provider;
use anyhow::Context;
use gateway_core::chain::backoff::Backoff;
use gateway_core::chain::chain_id::{check_code, expected_chain, format_pin, parse_pin, ChainIdSource};
use gateway_core::chain::Address;

use super::rpc::{CallError, RpcError, RpcPool};

/// The pin's file name in the state dir.
pub const PIN_FILE: &str = "chain_id";

/// The pin in `state_dir`, if one was written.
pub fn read_pin(state_dir: &Path) -> anyhow::Result<Option<u64>> {
    let path = state_dir.join(PIN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_pin(&text)
            .map(Some)
            .with_context(|| format!("{} does not hold a chain id ({text:?}): remove it to learn the chain again", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// The chain id every endpoint must serve and the contract's code on it,
/// checked before the follower starts. `state_dir`: where the pin lives
/// (`None`: learned for this run only). An endpoint of another chain is
/// refused (logged) and the next one asked; no endpoint answering is not
/// fatal (the follower keeps trying). `None`: nothing known yet.
pub async fn establish(
    urls: &[String],
    contract: Address,
    configured: Option<u64>,
    state_dir: Option<&Path>,
    call_timeout: Duration,
) -> anyhow::Result<Option<u64>> {
    let pinned = match state_dir {
        Some(dir) => read_pin(dir)?,
        None => None,
    };
    let (expected, source) = expected_chain(configured, pinned)?;
    // One pass over the endpoints: a quick answer or the next one.
    let once = Backoff { initial: Duration::from_secs(3600), max: Duration::from_secs(3600) };
    let mut pool = RpcPool::new(urls, once, call_timeout)?.with_chain_check(expected, None);
    let address = alloy::primitives::Address::from(contract);
    let code = pool
        .call("eth_getCode", |provider| async move { provider.get_code_at(address).await.map_err(CallError::from) })
        .await;
    let Some(chain_id) = pool.chain_id() else {
        // An upgraded gateway restarting while its endpoints are down keeps
        // serving its last state; the follower learns the chain (unpinned)
        // from the first endpoint that answers, the next start pins it.
        tracing::warn!(
            error = %code.err().map(|e| e.to_string()).unwrap_or_default(),
            "no chain.chain_id configured or pinned, and no RPC endpoint answered eth_chainId: the contract's code is not checked"
        );
        return Ok(None);
    };
    let endpoint = pool.current_endpoint().to_string();
    if source == ChainIdSource::Unknown {
        if let Some(dir) = state_dir {
            let path = dir.join(PIN_FILE);
            crate::store::write_atomically(&path, format_pin(chain_id).as_bytes())
                .with_context(|| format!("pinning the chain id in {}", path.display()))?;
            tracing::warn!(
                chain_id,
                %endpoint,
                pin = %path.display(),
                "CHAIN ID PINNED: no chain.chain_id configured, so the chain this endpoint serves is now the gateway's; \
                 every endpoint must serve it from now on. Set chain.chain_id = {chain_id} to say so in the configuration"
            );
        }
    }
    match code {
        Ok(code) => check_code(&code, &contract.to_string(), chain_id, &endpoint)?,
        Err(RpcError::AllDown { last, .. }) => {
            tracing::warn!(chain_id, error = %last, "no RPC endpoint of chain {chain_id} answered: the contract's code is not checked; the follower keeps trying");
        }
        Err(err @ RpcError::Rejected { .. }) => return Err(err).context("checking the contract's code (eth_getCode)"),
    }
    tracing::info!(chain_id, contract = %contract, %endpoint, source = ?source, "following chain {chain_id}");
    Ok(Some(chain_id))
}

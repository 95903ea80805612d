//! Any ERC-721 through the gateway: `gateway run` follows the
//! `MinimalAccessNFT` fixture on a real anvil, a contract whose transfers
//! and burns emit only ERC-721's standard `Transfer` and leave the key bound.
//! A transfer is seen at once (the key unbound, then the token read back:
//! its new owner, and the key the contract still holds), not at the next
//! reconcile; a burn removes the token.

use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use anyhow::{ensure, Context, Result};
use gateway_tests::lab::{Lab, DEV_ADDRESSES, DEV_KEYS};
use gateway_tests::minimal_nft::{self, MinimalAccessNFT};
use gateway_tests::netns::{require_root, wait_for};
use gateway_tests::wg::Keypair;

/// What a chain action does, run inside the lab's gateway namespace (where
/// its anvil listens), signed by dev account `signer`.
fn on_chain<T: Send + 'static>(
    lab: &Lab,
    signer: usize,
    act: impl FnOnce(alloy::providers::DynProvider) -> futures::future::BoxFuture<'static, Result<T>> + Send + 'static,
) -> Result<T> {
    let url = format!("http://127.0.0.1:{}", lab.anvil_port());
    let key: PrivateKeySigner = DEV_KEYS[signer].parse()?;
    lab.gw.within(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async move {
            let provider = ProviderBuilder::new().wallet(key).connect(&url).await?.erased();
            act(provider).await
        })
    })
}

fn send(lab: &Lab, signer: usize, contract: Address, call: Call) -> Result<()> {
    on_chain(lab, signer, move |provider| {
        Box::pin(async move {
            let nft = MinimalAccessNFT::new(contract, provider);
            let pending = match call {
                Call::Mint { to, node, key } => nft.mintNodeAccess(to, node, key, String::new()).send().await?,
                Call::Transfer { from, to, token } => nft.transferFrom(from, to, U256::from(token)).send().await?,
                Call::Burn { token } => nft.burn(U256::from(token)).send().await?,
            };
            ensure!(pending.get_receipt().await?.status(), "reverted");
            Ok(())
        })
    })
}

enum Call {
    Mint { to: Address, node: String, key: String },
    Transfer { from: Address, to: Address, token: u64 },
    Burn { token: u64 },
}

/// The token's entry in `/v1/peers`.
fn peer(lab: &Lab, token: u64) -> Result<Option<serde_json::Value>> {
    let (_, body) = lab.http_get("/v1/peers")?;
    let peers: serde_json::Value = serde_json::from_str(&body).with_context(|| format!("/v1/peers: {body}"))?;
    Ok(peers["peers"].as_array().into_iter().flatten().find(|p| p["token_id"].as_u64() == Some(token)).cloned())
}

#[test]
fn transfers_and_burns_of_a_contract_with_only_erc721_events_reach_the_gateway() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut lab = Lab::new(0)?;
    let minimal = on_chain(&lab, 0, |provider| Box::pin(async move { Ok(minimal_nft::deploy(&provider).await?.0) }))?;
    lab.contract = format!("{minimal:#x}");
    let (holder, other): (Address, Address) = (DEV_ADDRESSES[1].parse()?, DEV_ADDRESSES[2].parse()?);
    let kept = Keypair::generate(lab.dir.path(), "kept")?;
    let burnt = Keypair::generate(lab.dir.path(), "burnt")?;
    send(&lab, 0, minimal, Call::Mint { to: holder, node: "node-kept".into(), key: kept.public.clone() })?;
    send(&lab, 0, minimal, Call::Mint { to: holder, node: "node-burnt".into(), key: burnt.public.clone() })?;
    lab.gateway_env.push(("GATEWAY_CHAIN_CHAIN_ID".into(), "31337".into()));
    if let Err(err) = lab.start_gateway("") {
        anyhow::bail!("{err:#}\n{}", std::fs::read_to_string(lab.log_path()).unwrap_or_default());
    }
    for token in [1, 2] {
        let entry = wait_for("the grants applied", Duration::from_secs(20), || Ok(peer(&lab, token)?.filter(|p| p["access_granted"] == true)))?;
        ensure!(entry["nft_owner"].as_str().is_some_and(|o| o.eq_ignore_ascii_case(DEV_ADDRESSES[1])), "{entry}");
    }

    // A transfer with only `Transfer`: the new owner is known at once (the
    // default reconcile is minutes away), and the key is what the contract
    // says after reading it back (this one leaves it bound).
    send(&lab, 1, minimal, Call::Transfer { from: holder, to: other, token: 1 })?;
    let entry = wait_for("the transfer followed", Duration::from_secs(20), || {
        Ok(peer(&lab, 1)?.filter(|p| p["nft_owner"].as_str().is_some_and(|o| o.eq_ignore_ascii_case(DEV_ADDRESSES[2]))))
    })?;
    let audit = std::fs::read_to_string(lab.dir.path().join("state/audit.jsonl"))?;
    let transfers: Vec<serde_json::Value> = audit
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|r| r["action"] == "transfer" && r["token_id"] == 1)
        .collect();
    ensure!(transfers.len() == 1, "the key was unbound at first sight, once: {transfers:?}\n{audit}");
    ensure!(entry["public_key"] == kept.public.as_str() && entry["access_granted"] == true, "then read back as the contract holds it: {entry}");

    // A burn with only `Transfer` to the zero address: the token is gone.
    send(&lab, 0, minimal, Call::Burn { token: 2 })?;
    let entry = wait_for("the burn followed", Duration::from_secs(20), || Ok(peer(&lab, 2)?.filter(|p| p["access_granted"] == false)))?;
    ensure!(entry["nft_owner"].is_null(), "no owner after a burn: {entry}");
    let (status, decision) = lab.http_get(&format!("/v1/access/{}", burnt.public))?;
    ensure!(status != 200, "the burnt token's key is denied: {status} {decision}");
    Ok(())
}

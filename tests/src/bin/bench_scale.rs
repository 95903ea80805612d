//! `cargo xtask bench scale`: the gateway with many tokens. Mints N tokens on
//! anvil (batched into full blocks), then starts a gateway from an empty state
//! and reports the backfill time, the time until every peer is in the data
//! plane and every slot open in XDP, the process's peak and resident memory,
//! and the memory per idle peer against a gateway with no tokens, measured in
//! the same run.

use std::io::Write as _;
use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256};
use alloy::providers::{Provider, ProviderBuilder};
use anyhow::{Context, Result};
use gateway::chain::contract::DstackAccessNFT;
use gateway::xdp::PinnedMaps;
use gateway_tests::bench_args::{arg, json_path};
use gateway_tests::lab::{Lab, DEV_ADDRESSES, DEV_KEYS};
use gateway_tests::netns::wait_for;
use std::time::{Duration, Instant};

/// `VmHWM` and `VmRSS` of a process, in KiB.
fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("{name} in /proc status"))?;
        Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

fn test_key(n: u64) -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&n.to_be_bytes());
    bytes[31] = 0x5a;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Tokens sent per batch before mining: anvil's pool slows down sharply
/// with thousands of pending transactions.
const MINT_BATCH: u64 = 500;

/// Mints `count` tokens in batches: each batch sent with automine off, then
/// mined into full blocks.
async fn mint_many(contract: Address, count: u64) -> Result<()> {
    let signer: alloy::signers::local::PrivateKeySigner = DEV_KEYS[0].parse()?;
    let admin = signer.address();
    let provider = ProviderBuilder::new().wallet(EthereumWallet::from(signer)).connect("http://127.0.0.1:8545").await?;
    let _: serde_json::Value = provider.raw_request("evm_setAutomine".into(), (false,)).await?;
    let access = DstackAccessNFT::new(contract, provider.clone());
    let owner: Address = DEV_ADDRESSES[1].parse()?;
    let mut nonce = provider.get_transaction_count(admin).await?;
    let mut n = 0;
    while n < count {
        let mut last: Option<B256> = None;
        for _ in 0..MINT_BATCH.min(count - n) {
            let pending = access
                .mintNodeAccess(owner, format!("node-{n}"), test_key(n), String::new())
                .nonce(nonce)
                .gas(500_000)
                .max_fee_per_gas(100_000_000_000)
                .max_priority_fee_per_gas(1_000_000_000)
                .send()
                .await?;
            last = Some(*pending.tx_hash());
            nonce += 1;
            n += 1;
        }
        let last = last.context("minted nothing")?;
        loop {
            // Full blocks raise the base fee 12.5% each (EIP-1559): after ~40 of
            // them it passes any fee cap and the rest would never be mined.
            let _: serde_json::Value = provider.raw_request("anvil_setNextBlockBaseFeePerGas".into(), ("0x3b9aca00",)).await?;
            let _: serde_json::Value = provider.raw_request("evm_mine".into(), ()).await?;
            if provider.get_transaction_receipt(last).await?.is_some() {
                break;
            }
        }
    }
    let _: serde_json::Value = provider.raw_request("evm_setAutomine".into(), (true,)).await?;
    Ok(())
}

fn main() -> Result<()> {
    let count = arg("--tokens", 10_000)?;
    let mut lab = Lab::new(0)?;
    // A /16 holds 65,533 nodes: the slot space of the XDP allow map.
    lab.gateway_env.push(("GATEWAY_NETWORK_CIDR".into(), "10.99.0.0/16".into()));
    lab.gateway_env.push(("GATEWAY_CHAIN_LOG_RANGE".into(), "5000".into()));

    // Baseline: the same gateway with no tokens.
    lab.start_gateway_with_rpc("http://127.0.0.1:8545", 100)?;
    std::thread::sleep(Duration::from_secs(1));
    let (_, baseline_rss) = memory_kib(lab.gateway_pid().context("gateway pid")?)?;
    lab.stop_gateway()?;
    std::fs::remove_dir_all(lab.dir.path().join("state"))?;

    let contract: Address = lab.contract.parse()?;
    let t = Instant::now();
    lab.gw.within(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(mint_many(contract, count))
    })?;
    let mint_s = t.elapsed().as_secs_f64();
    eprintln!("minted {count} tokens in {mint_s:.1} s");

    // From an empty state: start, backfill, apply everything.
    let started = Instant::now();
    lab.start_gateway_with_rpc("http://127.0.0.1:8545", 100)?;
    let ready_s = started.elapsed().as_secs_f64();
    let instance = lab.instance.clone();
    wait_for("every slot open", Duration::from_secs(300), || {
        let open = PinnedMaps::open_instance(&instance)?.allow.open_slots()?;
        Ok((open.len() as u64 == count).then_some(()))
    })?;
    let applied_s = started.elapsed().as_secs_f64();
    let peers = lab.metric("gw_peers_applied")?;
    std::thread::sleep(Duration::from_secs(1));
    let (peak_kib, rss_kib) = memory_kib(lab.gateway_pid().context("gateway pid")?)?;
    lab.stop_gateway()?;
    let per_peer = (rss_kib.saturating_sub(baseline_rss)) as f64 * 1024.0 / count as f64;

    let report = serde_json::json!({
        "tokens": count,
        "mint_seconds": mint_s,
        "backfill_to_ready_seconds": ready_s,
        "all_peers_applied_seconds": applied_s,
        "peers_applied": peers,
        "gateway_peak_rss_kib": peak_kib,
        "gateway_rss_kib": rss_kib,
        "baseline_rss_kib_no_tokens": baseline_rss,
        "rss_bytes_per_idle_peer": per_peer,
        "targets": { "backfill_seconds": 10, "rss_bytes_per_idle_peer": 4096 },
    });
    writeln!(
        std::io::stdout(),
        "{count} tokens: ready after {ready_s:.1} s, all peers applied after {applied_s:.1} s; RSS {rss_kib} KiB (peak {peak_kib}, no tokens {baseline_rss}) = {per_peer:.0} B per idle peer"
    )?;
    if let Some(path) = json_path() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

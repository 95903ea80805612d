//! `cargo xtask bench access`: how long "is key K allowed, and why" takes.
//! A registry of N tokens is built from real chain events on anvil (minted,
//! then followed); decisions are timed cached (moka hit), uncached (cache
//! miss: registry lookup and the staleness policy), and, for scale, what a
//! gateway that asked the chain on every miss would pay: re-reading the
//! token (`getNodeAccess` + `ownerOf`) from the local anvil.

use std::io::Write as _;
use anyhow::{Context, Result};
use gateway_core::access::{Access, AccessConfig};
use gateway::chain::rpc::read_token;
use gateway::chain::rpc::RpcPool;
use gateway_core::registry::{Network, Registry, WgKey};
use gateway_tests::lab::{Lab, DEV_ADDRESSES};
use std::time::{Duration, Instant};

fn percentiles(mut ns: Vec<f64>) -> serde_json::Value {
    ns.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| ns[((q * ns.len() as f64).ceil() as usize).clamp(1, ns.len()) - 1];
    serde_json::json!({ "n": ns.len(), "p50_us": p(0.5) / 1e3, "p99_us": p(0.99) / 1e3, "max_us": ns[ns.len() - 1] / 1e3 })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let tokens: u64 = args.iter().position(|a| a == "--tokens").and_then(|i| args.get(i + 1)).map(|v| v.parse()).transpose()?.unwrap_or(200);
    let json = args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)).cloned();

    // Real chain data: mint through the CLI, follow with the real follower.
    let lab = Lab::new(0)?;
    let mut keys = Vec::new();
    for n in 0..tokens {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&n.to_be_bytes());
        bytes[31] = 0x5a;
        let key = WgKey(bytes);
        lab.node_cli(0, &["mint", DEV_ADDRESSES[1], &format!("node-{n}"), "--pubkey", &key.to_string(), "--json"])?;
        keys.push(key);
    }
    let contract: alloy::primitives::Address = lab.contract.parse()?;
    let network = Network { cidr: "10.99.0.0/16".parse()?, dns_server: std::net::Ipv4Addr::new(10, 99, 0, 1) };
    let contract_s = lab.contract.clone();
    let (registry, chain_reads) = lab.gw.within(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel(100_000);
            let config = gateway::chain::follower::FollowerConfig::new(["http://127.0.0.1:8545"], contract);
            let follower = gateway::chain::follower::Follower::new(config, Default::default(), tx)?;
            let task = tokio::spawn(follower.run());
            let mut registry = Registry::new(contract_s.parse()?, network);
            let now = 1_700_000_000;
            loop {
                let ev = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await?.context("follower ended")?;
                let synced = matches!(ev, gateway_core::chain::ChainEvent::Synced { .. });
                let _ = registry.apply(&ev, now);
                if synced && registry.views().count() as u64 == tokens {
                    break;
                }
            }
            task.abort();
            // What asking the chain per decision would cost.
            let mut pool = RpcPool::new(&["http://127.0.0.1:8545".to_string()], Default::default(), Duration::from_secs(5))?;
            let mut reads = Vec::new();
            let head = pool.call("eth_blockNumber", |p| async move { Ok(alloy::providers::Provider::get_block_number(&p).await?) }).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            for t in 1..=tokens.min(200) {
                let started = Instant::now();
                read_token(&mut pool, contract, t as u128, head).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                reads.push(started.elapsed().as_nanos() as f64);
            }
            Ok::<_, anyhow::Error>((registry, reads))
        })
    })?;

    let mut access = Access::new(AccessConfig::default());
    let now = registry.last_sync().unwrap_or(0);
    // Warm: every key decided once, then timed hits.
    for k in &keys {
        let _ = access.check(&registry, k, now);
    }
    let mut cached = Vec::new();
    for round in 0..20 {
        for (i, k) in keys.iter().enumerate() {
            if (i + round) % 3 != 0 {
                continue;
            }
            let started = Instant::now();
            let d = access.check(&registry, k, now);
            cached.push(started.elapsed().as_nanos() as f64);
            std::hint::black_box(d);
        }
    }
    let mut uncached = Vec::new();
    for _ in 0..5 {
        for k in &keys {
            access.invalidate_all();
            let started = Instant::now();
            let d = access.check(&registry, k, now);
            uncached.push(started.elapsed().as_nanos() as f64);
            std::hint::black_box(d);
        }
    }
    let report = serde_json::json!({
        "tokens": tokens,
        "cached": percentiles(cached),
        "uncached_registry": percentiles(uncached),
        "chain_read_per_token": percentiles(chain_reads),
        "targets": { "cached_p99_us": 10, "uncached_p99_ms": 50 },
    });
    writeln!(std::io::stdout(), "access decision latency over {tokens} tokens (target: cached p99 < 10 us, uncached p99 < 50 ms)")?;
    for (name, row) in [("cached", "cached"), ("uncached (registry)", "uncached_registry"), ("chain re-read per token", "chain_read_per_token")] {
        let r = &report[row];
        writeln!(std::io::stdout(), "  {name:<24} n={:<6} p50 {:>9.2} us  p99 {:>9.2} us  max {:>9.2} us", r["n"], r["p50_us"].as_f64().unwrap_or(0.0), r["p99_us"].as_f64().unwrap_or(0.0), r["max_us"].as_f64().unwrap_or(0.0))?;
    }
    if let Some(path) = json {
        let path = std::path::PathBuf::from(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

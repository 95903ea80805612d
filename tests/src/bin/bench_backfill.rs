//! `cargo xtask bench backfill`: a fresh gateway's backfill behind a hosted
//! provider's limits: the `eth_getLogs` calls it makes and its wall time,
//! beside today's fixed 2,000-block span measured in the same run, and beside
//! the fewest calls those limits allow.
//!
//! The real part: a real anvil holding a long history (20,000 blocks, 2,000
//! grants, built once), behind the fault-injecting provider proxy with a
//! 10,000-result cap and a block-range cap scaled to the history (5,000
//! blocks, Infura's words). `gateway chain follow --exit-when-synced` runs
//! through it as configured by default and pinned to the fixed span, three
//! alternating rounds of each, the median wall time reported.
//! The proxy counts the calls.
//!
//! The simulated part: a Base-like chain (30 million blocks, the contract at
//! block 5,000,000, 10,000 grants scattered after it) behind each provider's
//! limits, call by call in `backfill_sim`: the gateway's sans-IO follower
//! itself against a model endpoint, beside the span logic it had before it
//! read refusals (2,000 blocks, halved on any error), with a simulated
//! 100 ms round trip.

use std::io::Write as _;
use std::time::{Duration, Instant};

use alloy::providers::Provider;
use anyhow::{Context, Result};
use gateway_tests::bench_args::{arg, json_path};
use gateway_tests::backfill_sim;
use gateway_tests::history::History;
use gateway_tests::netns::gateway_bin;
use gateway_tests::provider_limits::ProviderLimits;
use gateway_tests::provider_proxy::ProviderProxy;
use serde_json::{json, Value};

/// Today's span: 2,000 blocks, what every provider we know of accepts.
const FIXED_SPAN: u64 = 2_000;

/// Backfills of each kind per run.
const ROUNDS: usize = 3;

/// The run with the median wall time (calls are the same in every round).
fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    runs.swap_remove(runs.len() / 2)
}

/// One backfill through the proxy: calls it made, seconds it took.
struct Run {
    calls: usize,
    refused: usize,
    seconds: f64,
    filter: Option<Value>,
}

async fn backfill(history: &History, limits: &ProviderLimits, span: Option<u64>) -> Result<Run> {
    let proxy = ProviderProxy::start(&history.chain.http_url(), limits.clone()).await?;
    let mut cmd = std::process::Command::new(gateway_bin());
    cmd.args(["chain", "follow", "--exit-when-synced", "--json"])
        .args(["--rpc-url", &proxy.http_url()])
        .args(["--contract", &format!("{:#x}", history.contract())])
        .args(["--from-block", &history.chain.deploy_block.to_string()])
        .env("RUST_LOG", "warn");
    if let Some(span) = span {
        cmd.args(["--max-block-span", &span.to_string()]);
    }
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || cmd.output()).await?.context("running gateway chain follow")?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(output.status.success(), "gateway chain follow failed: {}", String::from_utf8_lossy(&output.stderr));
    let granted = String::from_utf8_lossy(&output.stdout).lines().filter(|line| line.contains("\"Granted\"")).count();
    anyhow::ensure!(granted == history.grant_blocks.len(), "the backfill found {granted} of {} grants", history.grant_blocks.len());
    let calls = proxy.get_logs_calls();
    Ok(Run {
        calls: calls.len(),
        refused: calls.iter().filter(|c| c.refused.is_some()).count(),
        seconds,
        filter: calls.first().and_then(|c| c.filter.clone()),
    })
}

/// The fewest calls `limits` allow for the logs the follower's own filter matches.
async fn fewest_calls(history: &History, limits: &ProviderLimits, filter: Option<Value>) -> Result<u64> {
    let filter = filter.context("the follower made no eth_getLogs call")?;
    let mut filter: alloy::rpc::types::Filter = serde_json::from_value(filter)?;
    filter = filter.from_block(history.chain.deploy_block).to_block(history.head);
    let logs = history.chain.admin.provider().get_logs(&filter).await?;
    let blocks: Vec<u64> = logs.iter().filter_map(|log| log.block_number).collect();
    Ok(limits.fewest_calls(history.chain.deploy_block, history.head, &blocks))
}

/// The simulated part: each provider's limits over a Base-like history.
fn simulated(out: &mut impl std::io::Write) -> Result<Value> {
    const FIRST: u64 = 5_000_000;
    const LAST: u64 = 30_000_000;
    const TOKENS: u64 = 10_000;
    let history = backfill_sim::SimHistory::grants(FIRST, LAST, TOKENS);
    let logs = &history.log_blocks;
    let mut providers = serde_json::Map::new();
    let mut totals = (0u64, 0u64, 0.0f64, 0.0f64);
    writeln!(out, "simulated: blocks {FIRST}..={LAST}, {TOKENS} grants, {} ms a round trip", backfill_sim::SIMULATED_RTT.as_millis())?;
    writeln!(out, "{:<14} {:>8} {:>8} {:>10} {:>9} {:>12} {:>12}", "provider", "fewest", "calls", "x fewest", "fixed", "fixed/calls", "seconds")?;
    for (name, limits) in [
        ("alchemy_free", ProviderLimits::alchemy_free()),
        ("alchemy_paid", ProviderLimits::alchemy_paid()),
        ("infura", ProviderLimits::infura()),
        ("quicknode", ProviderLimits::quicknode()),
        ("public_node", ProviderLimits::public_node()),
    ] {
        let fewest = limits.fewest_calls(FIRST, LAST, logs);
        let ours = backfill_sim::adaptive(&limits, &history, FIRST, LAST)?;
        let today = backfill_sim::fixed_span(&limits, &history, FIRST, LAST, FIXED_SPAN);
        let over_fewest = ours.calls as f64 / fewest as f64;
        let fewer = today.calls as f64 / ours.calls as f64;
        writeln!(out, "{name:<14} {fewest:>8} {:>8} {over_fewest:>10.3} {:>9} {fewer:>12.2} {:>12.1}", ours.calls, today.calls, ours.seconds)?;
        providers.insert(
            name.to_string(),
            json!({
                "fewest_calls": fewest,
                "calls": ours.calls,
                "refused": ours.refused,
                "requests": ours.requests,
                "requests_fixed_span": today.requests,
                "calls_fixed_span": today.calls,
                "refused_fixed_span": today.refused,
                "seconds": ours.seconds,
                "seconds_fixed_span": today.seconds,
                "calls_over_fewest": over_fewest,
                "fixed_span_over_calls": fewer,
            }),
        );
        totals = (totals.0 + ours.calls, totals.1 + today.calls, totals.2 + ours.seconds, totals.3 + today.seconds);
    }
    Ok(json!({
        "first_block": FIRST,
        "last_block": LAST,
        "tokens": TOKENS,
        "round_trip_ms": backfill_sim::SIMULATED_RTT.as_millis() as u64,
        "calls": totals.0,
        "calls_fixed_span": totals.1,
        "seconds": totals.2,
        "seconds_fixed_span": totals.3,
        "providers": providers,
    }))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let simulated = simulated(&mut std::io::stdout().lock())?;
    let blocks = arg("--blocks", 20_000)?;
    let tokens = arg("--tokens", 2_000)?;
    let history = History::build(blocks, tokens).await?;
    let limits = ProviderLimits { max_range: Some(5_000), max_results: Some(10_000), ..ProviderLimits::infura() };

    // Alternating rounds, the median of each: the first process of a run pays
    // for a cold page cache, and the load of a shared machine moves.
    let mut adaptive_runs = Vec::new();
    let mut fixed_runs = Vec::new();
    for _ in 0..ROUNDS {
        adaptive_runs.push(backfill(&history, &limits, None).await?);
        fixed_runs.push(backfill(&history, &limits, Some(FIXED_SPAN)).await?);
    }
    let adaptive = median(adaptive_runs);
    let fixed = median(fixed_runs);
    let fewest = fewest_calls(&history, &limits, adaptive.filter.clone()).await?;

    let real = json!({
        "blocks": history.head - history.chain.deploy_block + 1,
        "tokens": tokens,
        "history_build_seconds": history.built_in.as_secs_f64(),
        "limits": "Infura's words: 5,000 blocks, 10,000 results",
        "calls": adaptive.calls,
        "refused": adaptive.refused,
        "calls_fixed_span": fixed.calls,
        "refused_fixed_span": fixed.refused,
        "fewest_calls": fewest,
        "seconds": adaptive.seconds,
        "seconds_fixed_span": fixed.seconds,
    });
    let report = json!({ "real": real, "simulated": simulated });

    let mut out = std::io::stdout().lock();
    writeln!(out, "backfill of {} blocks with {tokens} grants (history built in {:.1} s)", real["blocks"], history.built_in.as_secs_f64())?;
    writeln!(out, "{:<22} {:>8} {:>8} {:>10}", "", "calls", "refused", "seconds")?;
    writeln!(out, "{:<22} {:>8} {:>8} {:>10.2}", "default follower", adaptive.calls, adaptive.refused, adaptive.seconds)?;
    writeln!(out, "{:<22} {:>8} {:>8} {:>10.2}", "fixed 2,000 span", fixed.calls, fixed.refused, fixed.seconds)?;
    writeln!(out, "{:<22} {:>8}", "fewest the limits allow", fewest)?;
    if let Some(path) = json_path() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
        writeln!(out, "wrote {}", path.display())?;
    }
    // The proxy's tasks and anvil go with the runtime; give the last answers a moment to flush.
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}

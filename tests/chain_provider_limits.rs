//! The follower behind a provider's limits, end to end: `gateway chain
//! follow` backfills a real anvil history through the fault-injecting proxy
//! (tests/src/provider_proxy.rs) speaking each provider's own words, and the
//! proxy's record of the calls shows what it did with each refusal: a
//! suggested range asked at once and the cap kept, too many results split,
//! a rate limit waited out as told on the same endpoint, a timeout shrunk,
//! and the span grown again while answers are small. Every grant arrives.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gateway_tests::history::History;
use gateway_tests::netns::gateway_bin;
use gateway_tests::provider_limits::{ProviderLimits, RefusalKind};
use gateway_tests::provider_proxy::{CallRecord, Fault, ProviderProxy};

/// `gateway chain follow --exit-when-synced` over `rpc_urls`; its stdout
/// lines and stderr. Every grant of the history must be among the lines.
async fn follow(history: &History, rpc_urls: &[String]) -> (Vec<String>, String) {
    let mut cmd = std::process::Command::new(gateway_bin());
    cmd.args(["chain", "follow", "--exit-when-synced", "--json", "--chain-id", "31337"])
        .args(["--rpc-url", &rpc_urls.join(",")])
        .args(["--contract", &format!("{:#x}", history.contract())])
        .args(["--from-block", &history.chain.deploy_block.to_string()])
        .env("RUST_LOG", "info");
    let output = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "gateway chain follow failed: {stderr}");
    let lines: Vec<String> = String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect();
    let granted = lines.iter().filter(|l| l.contains("\"Granted\"")).count();
    assert_eq!(granted, history.grant_blocks.len(), "every grant arrives:\n{stderr}");
    assert!(!lines.iter().any(|l| l.contains("\"Unavailable\"")), "a limit is not an outage:\n{stderr}");
    (lines, stderr)
}

fn width((from, to): (u64, u64)) -> u64 {
    to - from + 1
}

/// The `eth_getLogs` calls answered, in order: they must tile the history.
fn assert_tiles(calls: &[CallRecord], first: u64, last: u64) {
    let mut next = first;
    for call in calls.iter().filter(|c| c.refused.is_none()) {
        let (from, to) = call.range.unwrap();
        assert_eq!(from, next, "answered ranges follow each other: {calls:#?}");
        next = to + 1;
    }
    assert!(next > last, "the answered ranges reach the head ({next} <= {last}): {calls:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suggested_range_is_asked_at_once_and_the_cap_kept() {
    let history = History::build(1_500, 60).await.unwrap();
    let start = history.chain.deploy_block;
    let proxy = ProviderProxy::start(&history.chain.http_url(), ProviderLimits::alchemy_free()).await.unwrap();
    follow(&history, &[proxy.http_url()]).await;
    let calls = proxy.get_logs_calls();
    assert_eq!(calls[0].refused, Some(RefusalKind::RangeTooWide), "the first call asks wide: {calls:#?}");
    assert_eq!(calls[1].range, Some((start, start + 499)), "then exactly the range Alchemy suggested");
    assert_eq!(calls.iter().filter(|c| c.refused.is_some()).count(), 1, "one refusal teaches the cap: {calls:#?}");
    assert!(calls[1..].iter().all(|c| width(c.range.unwrap()) <= 500));
    assert_tiles(&calls, start, history.head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_results_split_the_range() {
    let history = History::build(1_500, 150).await.unwrap();
    let start = history.chain.deploy_block;
    // A public reth node capped at 40 logs (20 grants) an answer.
    let limits = ProviderLimits { max_results: Some(40), ..ProviderLimits::public_node() };
    let proxy = ProviderProxy::start(&history.chain.http_url(), limits).await.unwrap();
    follow(&history, &[proxy.http_url()]).await;
    let calls = proxy.get_logs_calls();
    let refused: Vec<usize> = (0..calls.len()).filter(|&i| calls[i].refused == Some(RefusalKind::TooManyResults)).collect();
    assert!(!refused.is_empty(), "the cap was met: {calls:#?}");
    for i in refused {
        let (from, to) = calls[i].range.unwrap();
        let (next_from, next_to) = calls[i + 1].range.unwrap();
        assert!(next_from == from && next_to < to, "a refused range is split from its start: {:?} then {:?}", calls[i], calls[i + 1]);
    }
    assert!(calls.iter().filter(|c| c.refused.is_none()).all(|c| c.logs <= 40));
    assert_tiles(&calls, start, history.head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_waited_out_as_told_on_the_same_endpoint() {
    let history = History::build(600, 20).await.unwrap();
    let start = history.chain.deploy_block;
    let proxy = ProviderProxy::start(&history.chain.http_url(), ProviderLimits::public_node()).await.unwrap();
    // Base's public endpoint: 429, -32016 "over rate limit", Retry-After: 1.
    proxy.inject(Fault::OnLogs(Box::new(Fault::RateLimited { retry_after: Some(Duration::from_secs(1)) })));
    // A healthy second endpoint: failing over to it would hide the wait.
    follow(&history, &[proxy.http_url(), history.chain.http_url()]).await;
    let calls = proxy.get_logs_calls();
    assert_eq!(calls[0].refused, Some(RefusalKind::RateLimited));
    assert_eq!(calls[1].range, calls[0].range, "the same range again: {calls:#?}");
    assert!(calls[1].at.duration_since(calls[0].at) >= Duration::from_secs(1), "after the Retry-After it named");
    assert_tiles(&calls, start, history.head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_shrink_the_span_and_small_answers_grow_it_again() {
    let history = History::build(1_500, 30).await.unwrap();
    let start = history.chain.deploy_block;
    let proxy = ProviderProxy::start(&history.chain.http_url(), ProviderLimits::infura()).await.unwrap();
    // Infura's "query timeout exceeded" four times over.
    for _ in 0..4 {
        proxy.inject(Fault::OnLogs(Box::new(Fault::QueryTimeout)));
    }
    follow(&history, &[proxy.http_url()]).await;
    let calls = proxy.get_logs_calls();
    for i in 0..4 {
        assert_eq!(calls[i].refused, Some(RefusalKind::TimedOut), "{calls:#?}");
        let (from, to) = calls[i].range.unwrap();
        let (next_from, next_to) = calls[i + 1].range.unwrap();
        assert!(next_from == from && next_to < to, "each timeout shrinks: {:?} then {:?}", calls[i], calls[i + 1]);
    }
    let answered: Vec<&CallRecord> = calls.iter().filter(|c| c.refused.is_none()).collect();
    assert!(answered.len() >= 2, "{calls:#?}");
    let (first, second) = (width(answered[0].range.unwrap()), width(answered[1].range.unwrap()));
    let left = history.head - answered[1].range.unwrap().0 + 1;
    assert!(second > first || second == left, "a small answer grows the span again ({first} then {second}): {calls:#?}");
    assert_tiles(&calls, start, history.head);
}

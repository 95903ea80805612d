//! A backfill simulated call by call (pure: no I/O; seconds are simulated):
//! the gateway's own sans-IO follower (`gateway_core::chain::follower`, the
//! one `gateway run` drives) asks a model endpoint that holds a long history
//! and refuses as a provider does (`provider_limits`, the same model the
//! proxy serves), on a simulated clock. Beside it, the span logic the
//! follower had before it read refusals: 2,000 blocks, halved on any error,
//! grown back to 2,000 after each answer.

use std::time::Duration;

use alloy::primitives::U256;
use alloy::sol_types::SolEvent;
use gateway_core::chain::abi::{DstackAccessNFT, RawLog};
use gateway_core::chain::follower::{Follower, FollowerConfig, StartState};
use gateway_core::chain::rpc::{RpcCall, RpcFailure, RpcReply, RpcResult};
use gateway_core::chain::{Address, BlockHash, ChainEvent, TxHash};
use gateway_core::time::MonoTime;

use crate::provider_limits::{ProviderLimits, Refusal};

/// One round trip to a hosted provider across the internet.
pub const SIMULATED_RTT: Duration = Duration::from_millis(100);

/// The simulated chain's id (Base's).
const CHAIN_ID: u64 = 8453;

const CONTRACT: Address = Address([0xc0; 20]);

/// What a simulated backfill cost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimOutcome {
    /// `eth_getLogs` calls (what the fewest-calls bound counts).
    pub calls: u64,
    /// Of them, refused.
    pub refused: u64,
    /// Every call: block hashes around each range, the head, the chain id.
    pub requests: u64,
    /// Round trips plus the waits providers asked for.
    pub seconds: f64,
}

/// A history: the block of every log the follower's filter matches, sorted,
/// and the logs themselves.
pub struct SimHistory {
    pub log_blocks: Vec<u64>,
    logs: Vec<RawLog>,
}

impl SimHistory {
    /// `tokens` grants scattered over `[first, last]`, each logged as a
    /// mint does: ERC-721's `Transfer` and `NodeAccessGranted`.
    pub fn grants(first: u64, last: u64, tokens: u64) -> Self {
        let mut logs = Vec::new();
        for (i, block) in crate::history::scatter(first, last, tokens)
            .into_iter()
            .enumerate()
        {
            let token = U256::from(i as u64 + 1);
            let owner = alloy::primitives::Address::repeat_byte(0x0a);
            let transfer = DstackAccessNFT::Transfer {
                from: alloy::primitives::Address::ZERO,
                to: owner,
                tokenId: token,
            };
            let granted = DstackAccessNFT::NodeAccessGranted {
                tokenId: token,
                nodeId: format!("node-{}", i + 1),
                owner,
                wireguardPublicKey: format!("key-{}", i + 1),
            };
            for (index, data) in [transfer.encode_log_data(), granted.encode_log_data()]
                .into_iter()
                .enumerate()
            {
                let (topics, data) = data.split();
                logs.push(RawLog {
                    address: CONTRACT,
                    topics,
                    data,
                    block_number: Some(block),
                    block_hash: Some(block_hash(block)),
                    tx_hash: Some(TxHash([0x7e; 32])),
                    log_index: Some(index as u64),
                    removed: false,
                });
            }
        }
        let log_blocks = logs.iter().filter_map(|log| log.block_number).collect();
        SimHistory { log_blocks, logs }
    }

    fn grants_count(&self) -> usize {
        self.logs.len() / 2
    }
}

fn block_hash(number: u64) -> BlockHash {
    let mut bytes = [0xb1; 32];
    bytes[..8].copy_from_slice(&number.to_be_bytes());
    BlockHash(bytes)
}

/// A refusal as the transport hands it to the follower.
fn failure(refusal: Refusal) -> RpcFailure {
    if refusal.http_status == 200 {
        let error = &refusal.error;
        RpcFailure::JsonRpc {
            code: error["code"].as_i64().unwrap_or(0),
            message: error["message"].as_str().unwrap_or_default().to_string(),
            data: error
                .get("data")
                .map(|d| d.as_str().map_or_else(|| d.to_string(), str::to_string)),
        }
    } else {
        let body =
            serde_json::json!({ "jsonrpc": "2.0", "id": 1, "error": refusal.error }).to_string();
        RpcFailure::Http {
            status: refusal.http_status,
            retry_after: refusal.retry_after,
            body,
        }
    }
}

/// The model endpoint's answer to `call` over a chain whose head is `last`.
fn answer(limits: &ProviderLimits, history: &SimHistory, last: u64, call: &RpcCall) -> RpcResult {
    match call {
        RpcCall::ChainId => Ok(RpcReply::ChainId(CHAIN_ID)),
        RpcCall::BlockNumber => Ok(RpcReply::BlockNumber(last)),
        RpcCall::BlockHash { number } => Ok(RpcReply::BlockHash(
            (*number <= last).then(|| block_hash(*number)),
        )),
        RpcCall::GetLogs { from, to, .. } => {
            if let Some(refusal) = limits.check_range(*from, *to) {
                return Err(failure(refusal));
            }
            let blocks = &history.log_blocks;
            let (start, end) = (
                blocks.partition_point(|&b| b < *from),
                blocks.partition_point(|&b| b <= *to),
            );
            if let Some(refusal) = limits.check_results(*from, *to, &blocks[start..end]) {
                return Err(failure(refusal));
            }
            Ok(RpcReply::Logs(history.logs[start..end].to_vec()))
        }
        other => Err(RpcFailure::JsonRpc {
            code: -32601,
            message: format!("{} is not simulated", other.method()),
            data: None,
        }),
    }
}

/// The follower's backfill of `[first, last]` behind `limits`, until its
/// cursor reaches `last` with every grant delivered.
pub fn adaptive(
    limits: &ProviderLimits,
    history: &SimHistory,
    first: u64,
    last: u64,
) -> anyhow::Result<SimOutcome> {
    let mut config = FollowerConfig::new(["https://provider.sim/v2/KEY"], CONTRACT);
    config.start_block = first;
    config.chain_id = Some(CHAIN_ID);
    // A backfill: no reconcile pass while it runs.
    config.reconcile_interval = Duration::from_secs(365 * 24 * 3600);
    let mut follower = Follower::new(config, StartState::default()).map_err(anyhow::Error::msg)?;
    let start = MonoTime::from_nanos(1_000_000_000);
    let mut now = start;
    let mut outcome = SimOutcome {
        calls: 0,
        refused: 0,
        requests: 0,
        seconds: 0.0,
    };
    let mut granted = 0usize;
    loop {
        if drain_until(&mut follower, &mut granted, last)? {
            break;
        }
        if let Some(request) = follower.poll_request(now) {
            outcome.requests += 1;
            anyhow::ensure!(outcome.requests < 10_000_000, "no end to the backfill");
            let result = answer(limits, history, last, &request.call);
            if matches!(request.call, RpcCall::GetLogs { .. }) {
                outcome.calls += 1;
                outcome.refused += u64::from(result.is_err());
            }
            now = now + SIMULATED_RTT;
            follower.handle_response(request.id, result, now);
            continue;
        }
        // What the step that ended the pass emitted, before time moves on.
        if drain_until(&mut follower, &mut granted, last)? {
            break;
        }
        match follower.poll_timeout() {
            Some((at, _)) => now = now.max(at),
            None => anyhow::bail!("the follower waits for nothing"),
        }
    }
    anyhow::ensure!(
        granted == history.grants_count(),
        "{granted} of {} grants delivered",
        history.grants_count()
    );
    outcome.seconds = now.saturating_since(start).as_secs_f64();
    Ok(outcome)
}

/// Takes the follower's events; `true` once its cursor reached `last`.
fn drain_until(follower: &mut Follower, granted: &mut usize, last: u64) -> anyhow::Result<bool> {
    let mut done = false;
    while let Some(event) = follower.poll_event() {
        match event {
            ChainEvent::Granted { .. } => *granted += 1,
            ChainEvent::Synced { block_number, .. } if block_number >= last => done = true,
            ChainEvent::Unavailable { error } => anyhow::bail!("the follower gave up: {error}"),
            _ => {}
        }
    }
    Ok(done)
}

/// The span logic the follower had before it read refusals, as it ran:
/// any refusal halves the span, any answer doubles it back up to
/// `max_span`. Each range cost the follower the hash of its end before the
/// logs and, once answered, that hash again and the one before the range.
pub fn fixed_span(
    limits: &ProviderLimits,
    history: &SimHistory,
    first: u64,
    last: u64,
    max_span: u64,
) -> SimOutcome {
    let mut outcome = SimOutcome {
        calls: 0,
        refused: 0,
        requests: 0,
        seconds: 0.0,
    };
    let (mut from, mut span) = (first, max_span.max(1));
    while from <= last {
        let to = from.saturating_add(span - 1).min(last);
        outcome.calls += 1;
        outcome.requests += 2;
        match answer(
            limits,
            history,
            last,
            &RpcCall::GetLogs {
                address: CONTRACT,
                topics: Vec::new(),
                from,
                to,
            },
        ) {
            Ok(_) => {
                outcome.requests += 2;
                span = span.saturating_mul(2).min(max_span);
                from = to + 1;
            }
            Err(_) => {
                outcome.refused += 1;
                if span == 1 {
                    break;
                }
                span /= 2;
            }
        }
    }
    outcome.seconds = outcome.requests as f64 * SIMULATED_RTT.as_secs_f64();
    outcome
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_follower_meets_each_providers_minimum_on_a_base_like_chain() {
        let (first, last) = (5_000_000, 30_000_000);
        let history = SimHistory::grants(first, last, 10_000);
        for limits in [
            ProviderLimits::alchemy_free(),
            ProviderLimits::alchemy_paid(),
            ProviderLimits::infura(),
            ProviderLimits::quicknode(),
            ProviderLimits::public_node(),
        ] {
            let fewest = limits.fewest_calls(first, last, &history.log_blocks);
            let ours = adaptive(&limits, &history, first, last).unwrap();
            let before = fixed_span(&limits, &history, first, last, 2_000);
            assert!(
                ours.calls as f64 <= 1.5 * fewest as f64,
                "{limits:?}: {} calls, fewest {fewest}",
                ours.calls
            );
            // 5x fewer than before, unless the provider's own cap leaves
            // no room (Alchemy's free 500 blocks: 2,000 halved is at most 2x).
            let at_the_cap = ours.calls as f64 <= 1.01 * fewest as f64;
            assert!(
                before.calls >= 5 * ours.calls || at_the_cap,
                "{limits:?}: before {} vs {}",
                before.calls,
                ours.calls
            );
        }
    }

    #[test]
    fn the_old_span_halved_on_every_refusal() {
        let limits = ProviderLimits::alchemy_free();
        let before = fixed_span(&limits, &SimHistory::grants(0, 1_999, 0), 0, 1_999, 2_000);
        // 2,000 and 1,000 refused, 500 answered; twice more 1,000 refused
        // and 500 answered; the last 500 fit at once.
        assert_eq!((before.calls, before.refused), (8, 4));
    }
}

//! A backfill simulated call by call (pure: no I/O; seconds are simulated):
//! the follower's span policy (`gateway_core::chain::log_span`) and its
//! reading of refusals (`gateway_core::chain::provider`) against a provider's
//! limits (`provider_limits`, the same model the proxy serves), beside
//! today's span logic (`gateway_core::chain::range::AdaptiveSpan`: 2,000
//! blocks, halved on any error, grown back to 2,000 after each answer).

use std::time::Duration;

use gateway_core::chain::log_span::{LogSpan, NextLogs, SPAN_CEILING};
use gateway_core::chain::provider::{classify, ProviderRefusal};
use gateway_core::chain::range::AdaptiveSpan;

use crate::provider_limits::{ProviderLimits, Refusal};

/// One round trip to a hosted provider across the internet.
pub const SIMULATED_RTT: Duration = Duration::from_millis(100);

/// What a simulated backfill cost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimOutcome {
    pub calls: u64,
    pub refused: u64,
    /// Round trips plus the waits providers asked for.
    pub seconds: f64,
}

/// The provider's answer to `[from, to]` over `logs` (sorted block numbers):
/// the number of logs, or its refusal.
fn answer(limits: &ProviderLimits, logs: &[u64], from: u64, to: u64) -> Result<u64, Refusal> {
    if let Some(refusal) = limits.check_range(from, to) {
        return Err(refusal);
    }
    let (start, end) = (logs.partition_point(|&b| b < from), logs.partition_point(|&b| b <= to));
    match limits.check_results(from, to, &logs[start..end]) {
        Some(refusal) => Err(refusal),
        None => Ok((end - start) as u64),
    }
}

/// The follower's policy: ask, read the refusal, ask what it says.
pub fn adaptive(limits: &ProviderLimits, logs: &[u64], first: u64, last: u64) -> anyhow::Result<SimOutcome> {
    let mut span = LogSpan::new(SPAN_CEILING, Duration::from_millis(250), Duration::from_secs(10));
    let mut outcome = SimOutcome { calls: 0, refused: 0, seconds: 0.0 };
    let mut from = first;
    let mut told: Option<(u64, u64)> = None;
    while from <= last {
        let Some((ask_from, ask_to)) = told.take().or_else(|| span.range(from, last)) else { break };
        let ask_to = ask_to.min(last);
        outcome.calls += 1;
        outcome.seconds += SIMULATED_RTT.as_secs_f64();
        match answer(limits, logs, ask_from, ask_to) {
            Ok(found) => {
                span.answered(ask_from, ask_to, found);
                from = ask_to + 1;
            }
            Err(refusal) => {
                outcome.refused += 1;
                let message = refusal.error["message"].as_str().unwrap_or_default().to_string();
                let data = refusal.error.get("data").map(ToString::to_string);
                let seen = ProviderRefusal {
                    http_status: (refusal.http_status != 200).then_some(refusal.http_status),
                    code: refusal.error["code"].as_i64(),
                    message: &message,
                    data: data.as_deref(),
                    retry_after: refusal.retry_after,
                    timed_out: false,
                };
                match span.refused(ask_from, ask_to, classify(ask_from, ask_to, &seen)) {
                    NextLogs::Ask { from, to } => told = Some((from, to)),
                    NextLogs::Retry { wait } => outcome.seconds += wait.as_secs_f64(),
                    NextLogs::Fail => anyhow::bail!("the follower gave up on [{ask_from}, {ask_to}]: {message}"),
                }
            }
        }
    }
    Ok(outcome)
}

/// Today's span logic, as the follower runs it: any refusal halves the
/// span, any answer doubles it back up to `max_span`.
pub fn fixed_span(limits: &ProviderLimits, logs: &[u64], first: u64, last: u64, max_span: u64) -> SimOutcome {
    let mut span = AdaptiveSpan::new(max_span);
    let mut outcome = SimOutcome { calls: 0, refused: 0, seconds: 0.0 };
    let mut from = first;
    while let Some(range) = span.next_range(from, last) {
        outcome.calls += 1;
        outcome.seconds += SIMULATED_RTT.as_secs_f64();
        match answer(limits, logs, range.from, range.to) {
            Ok(_) => {
                span.grow();
                from = range.to + 1;
            }
            Err(_) => {
                outcome.refused += 1;
                if !span.shrink() {
                    break;
                }
            }
        }
    }
    outcome
}

/// The logs a Base-like chain holds for `tokens` grants scattered over
/// `[first, last]`: two per grant, ERC-721's `Transfer` and `NodeAccessGranted`.
pub fn grant_logs(first: u64, last: u64, tokens: u64) -> Vec<u64> {
    crate::history::scatter(first, last, tokens).into_iter().flat_map(|block| [block, block]).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_policy_meets_each_providers_minimum_on_a_base_like_chain() {
        let (first, last) = (5_000_000, 30_000_000);
        let logs = grant_logs(first, last, 10_000);
        for limits in [
            ProviderLimits::alchemy_free(),
            ProviderLimits::alchemy_paid(),
            ProviderLimits::infura(),
            ProviderLimits::quicknode(),
            ProviderLimits::public_node(),
        ] {
            let fewest = limits.fewest_calls(first, last, &logs);
            let ours = adaptive(&limits, &logs, first, last).unwrap();
            let today = fixed_span(&limits, &logs, first, last, 2_000);
            assert!(ours.calls as f64 <= 1.5 * fewest as f64, "{limits:?}: {} calls, fewest {fewest}", ours.calls);
            assert!(today.calls >= ours.calls, "{limits:?}: today {} vs {}", today.calls, ours.calls);
        }
    }

    #[test]
    fn today_halves_on_every_refusal() {
        let limits = ProviderLimits::alchemy_free();
        let today = fixed_span(&limits, &[], 0, 1_999, 2_000);
        // 2,000 and 1,000 refused, 500 answered; twice more 1,000 refused
        // and 500 answered; the last 500 fit at once.
        assert_eq!((today.calls, today.refused), (8, 4));
    }
}

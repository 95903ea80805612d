//! What hosted RPC providers refuse on `eth_getLogs`, and the exact words they
//! refuse it with (pure: no I/O; time enters as `now`). The fault-injecting
//! proxy (`provider_proxy`) applies these in front of a real anvil.
//!
//! Every error text below is copied from the provider's documentation or from
//! a public report of a real answer, cited beside it; numbers in a text follow
//! the configured limit (a history scaled down for anvil says "500" where the
//! provider says "500", and "2K" where it says "2K"). Where a source gives no
//! HTTP status we answer 200, the JSON-RPC norm for an error object.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Whose error shapes the proxy speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderStyle {
    Alchemy,
    Infura,
    QuickNode,
    /// A public node running reth, as Base's public endpoints do.
    PublicNode,
}

/// A provider's refusal: the HTTP status, the JSON-RPC error object, and the
/// `Retry-After` header if it sends one.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    pub http_status: u16,
    pub error: Value,
    pub retry_after: Option<Duration>,
    pub kind: RefusalKind,
}

/// Which limit refused, for the proxy's call log and the tests' assertions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    RangeTooWide,
    TooManyResults,
    RateLimited,
    TimedOut,
}

/// Requests per second over a one-second window, and the `Retry-After` to send.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: u32,
    pub retry_after: Option<Duration>,
}

/// One provider's limits on `eth_getLogs`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderLimits {
    pub style: ProviderStyle,
    /// The widest range, in blocks counted inclusively, answered at all.
    pub max_range: Option<u64>,
    /// Ranges up to this many blocks are answered whatever their size (Alchemy's paid tiers: 2K).
    pub uncapped_range: Option<u64>,
    /// The most logs one answer may hold.
    pub max_results: Option<usize>,
    /// Ranges wider than `.0` blocks take `.1` before the provider gives up on them.
    pub slow_range: Option<(u64, Duration)>,
    pub rate_limit: Option<RateLimit>,
}

impl ProviderLimits {
    /// No limit at all: a plain node.
    pub fn unlimited(style: ProviderStyle) -> Self {
        Self { style, max_range: None, uncapped_range: None, max_results: None, slow_range: None, rate_limit: None }
    }

    /// Alchemy's free tier: 500 blocks a request, "< 500, not <= 500" counted as
    /// `to - from < 500` (risc0/risc0-ethereum#656: [0x1be4213, 0x1be4407] refused,
    /// [0x1be4213, 0x1be4406] suggested).
    pub fn alchemy_free() -> Self {
        Self { max_range: Some(500), ..Self::unlimited(ProviderStyle::Alchemy) }
    }

    /// Alchemy's paid tiers: any range with at most 10K logs, or up to 2K blocks
    /// with no cap (ethers-io/ethers.js#4703; docs "Deep dive into eth_getLogs").
    pub fn alchemy_paid() -> Self {
        Self { uncapped_range: Some(2_000), max_results: Some(10_000), ..Self::unlimited(ProviderStyle::Alchemy) }
    }

    /// Infura: 10,000 results and 10 seconds a query (docs, eth_getLogs
    /// "Constraints"), and, live, 10,000 blocks (INFURA/infura#237).
    pub fn infura() -> Self {
        Self { max_range: Some(10_000), max_results: Some(10_000), ..Self::unlimited(ProviderStyle::Infura) }
    }

    /// QuickNode's paid plans: 10,000 blocks (docs, eth_getLogs; the free trial allows 5).
    pub fn quicknode() -> Self {
        Self { max_range: Some(10_000), ..Self::unlimited(ProviderStyle::QuickNode) }
    }

    /// reth's defaults, which Base's public nodes answer with: 100,000 blocks
    /// and 20,000 logs (reth crates/rpc/rpc-server-types/src/constants.rs,
    /// `DEFAULT_MAX_BLOCKS_PER_FILTER`, `DEFAULT_MAX_LOGS_PER_RESPONSE`).
    pub fn public_node() -> Self {
        Self { max_range: Some(100_000), max_results: Some(20_000), ..Self::unlimited(ProviderStyle::PublicNode) }
    }

    /// Refuses a range before the node is asked, as each provider does.
    pub fn check_range(&self, from: u64, to: u64) -> Option<Refusal> {
        let max = self.max_range?;
        let blocks = to.saturating_sub(from).saturating_add(1);
        if blocks <= max {
            return None;
        }
        let last = from.saturating_add(max - 1);
        let (http_status, error) = match self.style {
            // risc0/risc0-ethereum#656, cartesi/rollups-node#655, BobTheBuidler/dank_mids#772.
            ProviderStyle::Alchemy => (200, json!({
                "code": -32600,
                "message": format!(
                    "You can make eth_getLogs requests with up to a {} block range. Based on your parameters, this block range should work: [{from:#x}, {last:#x}]",
                    thousands_k(max)
                ),
            })),
            // INFURA/infura#237: `{"code":-32602,"message":"range 1000000 exceeds limit of 10000"}`.
            ProviderStyle::Infura => {
                (200, json!({ "code": -32602, "message": format!("range {blocks} exceeds limit of {max}") }))
            }
            // OffchainLabs/arbitrum-sdk#609: HTTP 413, `{"code":-32614,"message":"eth_getLogs is limited to a 10,000 range"}`.
            ProviderStyle::QuickNode => {
                (413, json!({ "code": -32614, "message": format!("eth_getLogs is limited to a {} range", thousands_comma(max)) }))
            }
            // paradigmxyz/reth#8558: `{"code":-32602,"message":"query exceeds max block range 5000"}`.
            ProviderStyle::PublicNode => {
                (200, json!({ "code": -32602, "message": format!("query exceeds max block range {max}") }))
            }
        };
        Some(Refusal { http_status, error, retry_after: None, kind: RefusalKind::RangeTooWide })
    }

    /// Refuses an answer that holds too many logs. `log_blocks` are the block
    /// numbers of the logs the node found in `[from, to]`, in order.
    pub fn check_results(&self, from: u64, to: u64, log_blocks: &[u64]) -> Option<Refusal> {
        let max = self.max_results?;
        let blocks = to.saturating_sub(from).saturating_add(1);
        if log_blocks.len() <= max || self.uncapped_range.is_some_and(|uncapped| blocks <= uncapped) {
            return None;
        }
        // The widest range from `from` that holds at most `max` logs: up to the
        // block before the first log past the cap (one block if that is `from`).
        let fitting = log_blocks[max].saturating_sub(1).max(from);
        let (http_status, error) = match self.style {
            // ethers-io/ethers.js#4703 (the paid tiers' answer, verbatim but for the range).
            ProviderStyle::Alchemy => {
                let suggested_to = fitting.max(from.saturating_add(self.uncapped_range.unwrap_or(1) - 1)).min(to);
                (200, json!({
                    "code": -32602,
                    "message": format!(
                        "Log response size exceeded. You can make eth_getLogs requests with up to a {} block range and no limit on the response size, or you can request any block range with a cap of {} logs in the response. Based on your parameters and the response size limit, this block range should work: [{from:#x}, {suggested_to:#x}]",
                        thousands_k(self.uncapped_range.unwrap_or(0)),
                        thousands_k(max as u64)
                    ),
                }))
            }
            // ethers-io/ethers.js#4703: upper-case hex, and the range again in `data`.
            ProviderStyle::Infura => (200, json!({
                "code": -32005,
                "data": { "from": upper_hex(from), "limit": max, "to": upper_hex(fitting) },
                "message": format!("query returned more than {max} results. Try with this block range [{}, {}].", upper_hex(from), upper_hex(fitting)),
            })),
            // QuickNode documents no result cap; its nodes answer as geth does
            // (Infura's docs give geth's text, code -32005, without a range).
            ProviderStyle::QuickNode => {
                (200, json!({ "code": -32005, "message": format!("query returned more than {max} results") }))
            }
            // base/base#2421: reth on Base suggests a decimal range, and that
            // report shows it suggesting the very range that was refused.
            ProviderStyle::PublicNode => (200, json!({
                "code": -32602,
                "message": format!("query exceeds max results {max}, retry with the range {from}-{to}"),
            })),
        };
        Some(Refusal { http_status, error, retry_after: None, kind: RefusalKind::TooManyResults })
    }

    /// The furthest block one call starting at `from` can reach under these
    /// limits (never past `last`). `log_blocks`: the block of every log the
    /// filter matches, sorted.
    pub fn widest_reach(&self, from: u64, last: u64, log_blocks: &[u64]) -> u64 {
        let by_range = self.max_range.map_or(last, |max| from.saturating_add(max - 1));
        let by_results = match self.max_results {
            None => last,
            Some(max) => {
                let first_log = log_blocks.partition_point(|&b| b < from);
                let fits = match log_blocks.get(first_log + max) {
                    // The block before the first log past the cap (one block at least).
                    Some(&past) => past.saturating_sub(1).max(from),
                    None => last,
                };
                fits.max(self.uncapped_range.map_or(from, |uncapped| from.saturating_add(uncapped - 1)))
            }
        };
        by_range.min(by_results).min(last)
    }

    /// The fewest `eth_getLogs` calls that cover `[first, last]` under these
    /// limits: each call reaching as far as it can is optimal, since every
    /// call starts where the one before ended.
    pub fn fewest_calls(&self, first: u64, last: u64, log_blocks: &[u64]) -> u64 {
        let (mut from, mut calls) = (first, 0);
        while from <= last {
            calls += 1;
            match self.widest_reach(from, last, log_blocks).checked_add(1) {
                Some(next) => from = next,
                None => break,
            }
        }
        calls
    }

    /// Whether a range is slow enough to time out, and how long it stalls first.
    pub fn stall_for(&self, from: u64, to: u64) -> Option<Duration> {
        let (wider_than, stall) = self.slow_range?;
        (to.saturating_sub(from).saturating_add(1) > wider_than).then_some(stall)
    }

    /// What a provider answers once a slow query has run out of time, or
    /// `None` when it answers nothing (the connection is closed unanswered).
    pub fn timed_out(&self) -> Option<Refusal> {
        match self.style {
            // Infura's docs (eth_getLogs, "Constraints").
            ProviderStyle::Infura => Some(Refusal {
                http_status: 200,
                error: json!({ "code": -32005, "message": "query timeout exceeded" }),
                retry_after: None,
                kind: RefusalKind::TimedOut,
            }),
            _ => None,
        }
    }

    /// The provider's answer to a request over its rate.
    pub fn rate_limited(&self) -> Refusal {
        let retry_after = self.rate_limit.as_ref().and_then(|limit| limit.retry_after);
        let per_second = self.rate_limit.as_ref().map_or(1, |limit| limit.per_second);
        let (http_status, error) = match self.style {
            // conduitxyz/node#36: HTTP 429 and this body.
            ProviderStyle::Alchemy => (429, json!({
                "code": 429,
                "message": "Your app has exceeded its compute units per second capacity. If you have retries enabled, you can safely ignore this message. If not, check out https://docs.alchemy.com/reference/throughput",
            })),
            // ethers-io/ethers.js#640 and MetaMask/eth-json-rpc-infura#33 (Infura's
            // rate-limit docs): HTTP 429, and the wait it asks for in `data`.
            ProviderStyle::Infura => (429, json!({
                "code": -32005,
                "message": "project ID request rate exceeded",
                "data": {
                    "see": "https://infura.io/dashboard",
                    "current_rps": f64::from(per_second) + 1.0,
                    "allowed_rps": f64::from(per_second),
                    "backoff_seconds": retry_after.map_or(1.0, |d| d.as_secs_f64()),
                },
            })),
            // wevm/viem#5084: HTTP 200 and code -32007, "N/second request limit reached".
            ProviderStyle::QuickNode => {
                (200, json!({ "code": -32007, "message": format!("{per_second}/second request limit reached") }))
            }
            // base/node#368: Base's public endpoint, HTTP 429 with code -32016.
            ProviderStyle::PublicNode => (429, json!({ "code": -32016, "message": "over rate limit" })),
        };
        Refusal { http_status, error, retry_after, kind: RefusalKind::RateLimited }
    }
}

/// Requests admitted in the current one-second window (pure: `now` is given).
#[derive(Clone, Debug, Default)]
pub struct RateWindow {
    started: Option<Instant>,
    admitted: u32,
}

impl RateWindow {
    /// Admits a request at `now` unless `limit.per_second` were already admitted this second.
    pub fn admit(&mut self, limit: &RateLimit, now: Instant) -> bool {
        match self.started {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => {}
            _ => {
                self.started = Some(now);
                self.admitted = 0;
            }
        }
        if self.admitted >= limit.per_second {
            return false;
        }
        self.admitted += 1;
        true
    }
}

/// `2000` as Alchemy writes it ("2K"), other numbers as they are ("500").
fn thousands_k(n: u64) -> String {
    if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}K", n / 1_000)
    } else {
        n.to_string()
    }
}

/// `10000` as QuickNode writes it: "10,000".
fn thousands_comma(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `0xBDE5F8`, Infura's spelling.
fn upper_hex(n: u64) -> String {
    format!("0x{n:X}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn message(refusal: &Refusal) -> &str {
        refusal.error["message"].as_str().unwrap()
    }

    #[test]
    fn alchemy_free_refuses_501_blocks_and_suggests_the_500_its_sources_show() {
        let limits = ProviderLimits::alchemy_free();
        assert_eq!(limits.check_range(0x1be4213, 0x1be4406), None);
        let refusal = limits.check_range(0x1be4213, 0x1be4407).unwrap();
        assert_eq!(
            message(&refusal),
            "You can make eth_getLogs requests with up to a 500 block range. Based on your parameters, this block range should work: [0x1be4213, 0x1be4406]"
        );
        assert_eq!(refusal.error["code"], -32600);
    }

    #[test]
    fn infura_caps_results_with_an_upper_case_suggestion() {
        let limits = ProviderLimits { max_results: Some(3), ..ProviderLimits::infura() };
        assert_eq!(limits.check_results(10, 100, &[10, 20, 30]), None);
        let refusal = limits.check_results(10, 100, &[10, 20, 30, 40, 50]).unwrap();
        assert_eq!(message(&refusal), "query returned more than 3 results. Try with this block range [0xA, 0x27].");
        assert_eq!(refusal.error["data"]["to"], "0x27");
        assert_eq!(refusal.error["code"], -32005);
        // Four logs in the first block: the suggestion cannot be narrower than one block.
        let dense = limits.check_results(10, 100, &[10, 10, 10, 10]).unwrap();
        assert!(message(&dense).ends_with("[0xA, 0xA]."), "{}", message(&dense));
    }

    #[test]
    fn alchemy_paid_never_caps_2k_blocks_and_suggests_at_least_that_much() {
        let limits = ProviderLimits { max_results: Some(2), ..ProviderLimits::alchemy_paid() };
        assert_eq!(limits.check_results(0, 1_999, &[1, 2, 3, 4]), None);
        let refusal = limits.check_results(0, 9_999, &[1, 2, 3, 4]).unwrap();
        assert!(message(&refusal).starts_with("Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range"));
        assert!(message(&refusal).ends_with("this block range should work: [0x0, 0x7cf]"), "{}", message(&refusal));
    }

    #[test]
    fn quicknode_and_public_nodes_speak_their_own_words() {
        let quicknode = ProviderLimits::quicknode().check_range(0, 10_000).unwrap();
        assert_eq!((quicknode.http_status, message(&quicknode)), (413, "eth_getLogs is limited to a 10,000 range"));
        assert_eq!(ProviderLimits::quicknode().check_range(0, 9_999), None);
        let public = ProviderLimits { max_results: Some(1), ..ProviderLimits::public_node() };
        let refusal = public.check_results(25766988, 25775072, &[25766988, 25766990]).unwrap();
        assert_eq!(message(&refusal), "query exceeds max results 1, retry with the range 25766988-25775072");
        assert_eq!(message(&ProviderLimits::public_node().check_range(0, 100_000).unwrap()), "query exceeds max block range 100000");
        let infura = ProviderLimits::infura().check_range(0, 999_999).unwrap();
        assert_eq!(message(&infura), "range 1000000 exceeds limit of 10000");
    }

    #[test]
    fn rate_limits_carry_each_providers_status_and_wait() {
        let with_wait = |style| ProviderLimits {
            rate_limit: Some(RateLimit { per_second: 15, retry_after: Some(Duration::from_secs(2)) }),
            ..ProviderLimits::unlimited(style)
        };
        let alchemy = with_wait(ProviderStyle::Alchemy).rate_limited();
        assert_eq!((alchemy.http_status, alchemy.error["code"].as_i64()), (429, Some(429)));
        let infura = with_wait(ProviderStyle::Infura).rate_limited();
        assert_eq!(infura.error["data"]["backoff_seconds"], 2.0);
        let quicknode = with_wait(ProviderStyle::QuickNode).rate_limited();
        assert_eq!((quicknode.http_status, message(&quicknode)), (200, "15/second request limit reached"));
        let public = with_wait(ProviderStyle::PublicNode).rate_limited();
        assert_eq!((public.http_status, public.error["code"].as_i64()), (429, Some(-32016)));
        assert_eq!(public.retry_after, Some(Duration::from_secs(2)));
    }

    #[test]
    fn the_rate_window_admits_per_second_and_then_resets() {
        let limit = RateLimit { per_second: 2, retry_after: None };
        let mut window = RateWindow::default();
        let t0 = Instant::now();
        assert!(window.admit(&limit, t0));
        assert!(window.admit(&limit, t0 + Duration::from_millis(10)));
        assert!(!window.admit(&limit, t0 + Duration::from_millis(20)));
        assert!(window.admit(&limit, t0 + Duration::from_millis(1_001)));
    }

    #[test]
    fn slow_ranges_stall_and_only_infura_answers_after() {
        let limits = ProviderLimits { slow_range: Some((100, Duration::from_secs(3))), ..ProviderLimits::infura() };
        assert_eq!(limits.stall_for(0, 99), None);
        assert_eq!(limits.stall_for(0, 100), Some(Duration::from_secs(3)));
        assert_eq!(limits.timed_out().map(|r| r.kind), Some(RefusalKind::TimedOut));
        assert_eq!(ProviderLimits::quicknode().timed_out(), None);
    }

    #[test]
    fn the_fewest_calls_reach_as_far_as_each_limit_allows() {
        // 500-block cap over 2,000 blocks: 4 calls, whatever the logs.
        assert_eq!(ProviderLimits::alchemy_free().fewest_calls(0, 1_999, &[]), 4);
        assert_eq!(ProviderLimits::alchemy_free().fewest_calls(0, 2_000, &[]), 5);
        // A cap of 2 results: blocks 0..=4 hold logs at 1, 2, 3, 4 -> [0,2], [3,4].
        let capped = ProviderLimits { max_results: Some(2), ..ProviderLimits::unlimited(ProviderStyle::Infura) };
        assert_eq!(capped.widest_reach(0, 4, &[1, 2, 3, 4]), 2);
        assert_eq!(capped.fewest_calls(0, 4, &[1, 2, 3, 4]), 2);
        // Three logs in one block over a cap of 2: that block alone, then on.
        assert_eq!(capped.widest_reach(5, 9, &[5, 5, 5]), 5);
        // Alchemy's paid tiers always reach 2K blocks, however dense.
        let paid = ProviderLimits { max_results: Some(1), ..ProviderLimits::alchemy_paid() };
        assert_eq!(paid.widest_reach(0, 10_000, &[1, 2, 3]), 1_999);
        assert_eq!(ProviderLimits::unlimited(ProviderStyle::PublicNode).fewest_calls(7, 30_000_000, &[]), 1);
    }

    #[test]
    fn numbers_are_spelled_as_the_providers_spell_them() {
        assert_eq!((thousands_k(2_000), thousands_k(500), thousands_k(10_000)), ("2K".into(), "500".into(), "10K".into()));
        assert_eq!((thousands_comma(10_000), thousands_comma(5), thousands_comma(1_234_567)), ("10,000".into(), "5".into(), "1,234,567".into()));
    }
}

//! What a provider's words mean (pure: status and text in, meaning out).
//! Hosted providers say "too wide", "too many results", "too fast" and "too
//! slow" each in their own words and statuses (docs/chain.md, "Provider
//! limits", lists them with their sources). This module reads the words;
//! [`crate::chain::rpc::classify`] is the one place that names a failure's
//! kind, and asks it: [`rate_limit`] for any call, [`logs_limit`] for a
//! refused `eth_getLogs`.

use std::time::Duration;

/// A refusal as the transport saw it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProviderRefusal<'a> {
    /// The HTTP status when it was not 200 (Infura's and Base's 429, QuickNode's 413).
    pub http_status: Option<u16>,
    /// The JSON-RPC error code, when the answer held an error object.
    pub code: Option<i64>,
    /// The error message (or the HTTP body when there was no error object).
    pub message: &'a str,
    /// The error object's `data`, as JSON text.
    pub data: Option<&'a str>,
    /// A `Retry-After` header, when the transport could read one.
    pub retry_after: Option<Duration>,
}

/// What to ask instead of a refused `eth_getLogs` over `[from, to]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogsVerdict {
    /// Ask exactly this range next: the provider said it fits. `cap` is a
    /// block cap the same answer named (Alchemy's "up to a 500 block range"),
    /// `result_cap` the most logs it answers ("more than 10000 results").
    UseRange { from: u64, to: u64, cap: Option<u64>, result_cap: Option<u64> },
    /// The provider caps ranges at `max_blocks` blocks: never ask wider again.
    SpanCap { max_blocks: u64 },
    /// Too many results (or too wide) and no usable suggestion: split the range.
    Split { result_cap: Option<u64> },
    /// Too slow: shrink the span and try again.
    Shrink,
}

/// The provider says "too fast": wait (`Some`: as long as it said) and ask
/// the same again; the endpoint is healthy. `None`: not a rate limit.
pub fn rate_limit(refusal: &ProviderRefusal<'_>) -> Option<Option<Duration>> {
    let text = refusal.message.to_ascii_lowercase();
    is_rate_limit(refusal, &text).then(|| refusal.retry_after.or_else(|| refusal.data.and_then(backoff_seconds)))
}

/// What a refusal of `eth_getLogs` over `[from, to]` says about the range;
/// `None` when it names no limit (the endpoint failed, or said something
/// we do not know).
pub fn logs_limit(from: u64, to: u64, refusal: &ProviderRefusal<'_>) -> Option<LogsVerdict> {
    let text = refusal.message.to_ascii_lowercase();
    if text.contains("timeout") || text.contains("timed out") {
        return Some(LogsVerdict::Shrink);
    }
    // A suggestion first: it is the provider's own answer to "what fits".
    if let Some((s_from, s_to)) = suggested_range(refusal.message).or_else(|| refusal.data.and_then(data_range)) {
        if s_from == from && s_to >= from && s_to < to {
            return Some(LogsVerdict::UseRange {
                from: s_from,
                to: s_to,
                cap: block_cap(&text).filter(|&n| n > 0),
                result_cap: result_cap(&text),
            });
        }
        // base/base#2421: a "retry with the range" as wide as the refused
        // one, or one elsewhere, is no help; the size words below decide.
    }
    if let Some(max_blocks) = block_cap(&text) {
        if max_blocks > 0 {
            return Some(LogsVerdict::SpanCap { max_blocks });
        }
    }
    let too_many = ["more than", "max results", "response size", "too many", "results limit", "log response"];
    if too_many.iter().any(|words| text.contains(words)) {
        return Some(LogsVerdict::Split { result_cap: result_cap(&text) });
    }
    let too_wide = ["block range", "range too", "too wide", "too large", "exceeds limit"];
    if refusal.http_status == Some(413) || too_wide.iter().any(|words| text.contains(words)) {
        return Some(LogsVerdict::Split { result_cap: None });
    }
    None
}

fn is_rate_limit(refusal: &ProviderRefusal<'_>, text: &str) -> bool {
    // HTTP 429 (Alchemy, Infura, Base); QuickNode's 200 with -32007/-32012;
    // Base's -32016; Alchemy's code 429; and the words, whatever the code.
    refusal.http_status == Some(429)
        || matches!(refusal.code, Some(429 | -32007 | -32012 | -32016))
        || ["rate limit", "rate exceeded", "request limit reached", "too many requests", "compute units per second", "credits limited", "over rate"]
            .iter()
            .any(|words| text.contains(words))
}

/// `[0x…, 0x…]` (Alchemy, Infura; any case), or reth's decimal `range A-B`.
fn suggested_range(message: &str) -> Option<(u64, u64)> {
    if let Some(open) = message.rfind('[') {
        let inside = message[open + 1..].split(']').next()?;
        let (a, b) = inside.split_once(',')?;
        return Some((parse_number(a)?, parse_number(b)?));
    }
    let lower = message.to_ascii_lowercase();
    let after = &message[lower.find("retry with the range")? + "retry with the range".len()..];
    let (a, b) = after.trim().split_once('-')?;
    let b: String = b.chars().take_while(char::is_ascii_digit).collect();
    Some((a.trim().parse().ok()?, b.parse().ok()?))
}

/// Infura's `data: {"from": "0x…", "to": "0x…"}`.
fn data_range(data: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        let at = data.find(&format!("\"{name}\""))?;
        let rest = &data[at + name.len() + 2..];
        let value = rest.split('"').nth(1)?;
        parse_number(value)
    };
    Some((field("from")?, field("to")?))
}

/// A provider asking for more than an hour is not taken at its word.
const MAX_BACKOFF_SECONDS: f64 = 3_600.0;

/// Infura's `data.backoff_seconds`.
fn backoff_seconds(data: &str) -> Option<Duration> {
    let at = data.find("\"backoff_seconds\"")?;
    let rest = data[at + "\"backoff_seconds\"".len()..].trim_start().strip_prefix(':')?.trim_start();
    let number: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let seconds: f64 = number.parse().ok()?;
    (0.0..=MAX_BACKOFF_SECONDS).contains(&seconds).then(|| Duration::from_secs_f64(seconds))
}

/// A block cap named in the text: "exceeds limit of 10000", "limited to a
/// 10,000 range", "up to a 2K block range", "max block range 5000",
/// "block range is too wide (maximum 1024)", "max block range = 5000".
fn block_cap(text: &str) -> Option<u64> {
    const MARKERS: [&str; 6] =
        ["exceeds limit of", "limited to a", "up to a", "max block range", "(maximum", "maximum block range"];
    for marker in MARKERS {
        if let Some(at) = text.rfind(marker) {
            let rest = text[at + marker.len()..].trim_start().trim_start_matches(['=', ' ']);
            if let Some(n) = leading_count(rest) {
                // "up to a 2K block range and no limit": Alchemy's paid text
                // is about results, not a cap, when it speaks of log counts.
                if marker == "up to a" && text.contains("cap of") {
                    continue;
                }
                return Some(n);
            }
        }
    }
    None
}

/// The most logs an answer may hold, when the text says: "more than 10000
/// results", "max results 20000", "a cap of 10K logs".
fn result_cap(text: &str) -> Option<u64> {
    for marker in ["more than", "max results", "cap of"] {
        if let Some(at) = text.find(marker) {
            if let Some(n) = leading_count(text[at + marker.len()..].trim_start()) {
                return Some(n).filter(|&n| n > 0);
            }
        }
    }
    None
}

/// `10,000` / `2K` / `5000` at the start of `text`.
fn leading_count(text: &str) -> Option<u64> {
    let digits: String = text.chars().take_while(|c| c.is_ascii_digit() || *c == ',').filter(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().ok()?;
    let rest = &text[text.chars().take_while(|c| c.is_ascii_digit() || *c == ',').count()..];
    Some(if rest.starts_with('k') { n.saturating_mul(1_000) } else { n })
}

fn parse_number(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(code: i64, message: &str) -> ProviderRefusal<'_> {
        ProviderRefusal {
            code: Some(code),
            message,
            ..Default::default()
        }
    }

    fn classify(from: u64, to: u64, r: &ProviderRefusal<'_>) -> Option<LogsVerdict> {
        logs_limit(from, to, r)
    }

    #[test]
    fn alchemy_free_suggestion_is_used_at_once() {
        let r = refusal(-32600, "You can make eth_getLogs requests with up to a 500 block range. Based on your parameters, this block range should work: [0x1be4213, 0x1be4406]");
        assert_eq!(
            classify(0x1be4213, 0x1be4407, &r),
            Some(LogsVerdict::UseRange {
                from: 0x1be4213,
                to: 0x1be4406,
                cap: Some(500),
                result_cap: None
            })
        );
    }

    #[test]
    fn infura_upper_case_suggestion_and_data() {
        let r = ProviderRefusal {
            data: Some(r#"{"from":"0xBDE5F8","limit":10000,"to":"0xBDF000"}"#),
            ..refusal(-32005, "query returned more than 10000 results. Try with this block range [0xBDE5F8, 0xBDF000].")
        };
        assert_eq!(
            classify(0xBDE5F8, 0x102DBCC, &r),
            Some(LogsVerdict::UseRange {
                from: 0xBDE5F8,
                to: 0xBDF000,
                cap: None,
                result_cap: Some(10_000)
            })
        );
    }

    #[test]
    fn a_suggestion_no_narrower_than_the_request_splits() {
        let r = refusal(
            -32602,
            "query exceeds max results 20000, retry with the range 25766988-25775072",
        );
        assert_eq!(
            classify(25766988, 25775072, &r),
            Some(LogsVerdict::Split {
                result_cap: Some(20_000)
            })
        );
        let narrower = refusal(
            -32602,
            "query exceeds max results 20000, retry with the range 25766988-25770000",
        );
        assert_eq!(
            classify(25766988, 25775072, &narrower),
            Some(LogsVerdict::UseRange {
                from: 25766988,
                to: 25770000,
                cap: None,
                result_cap: Some(20_000)
            })
        );
    }

    #[test]
    fn block_caps_are_learned_from_every_phrasing() {
        let cases = [
            (refusal(-32602, "range 1000000 exceeds limit of 10000"), 10_000),
            (ProviderRefusal { http_status: Some(413), ..refusal(-32614, "eth_getLogs is limited to a 10,000 range") }, 10_000),
            (refusal(-32602, "query exceeds max block range 100000"), 100_000),
            (refusal(-32000, "block range is too wide (maximum 1024)"), 1_024),
            (refusal(-32000, "block range is larger than max block range, block range = 5120, max block range = 5000"), 5_000),
        ];
        for (r, cap) in cases {
            assert_eq!(
                classify(0, 1_000_000, &r),
                Some(LogsVerdict::SpanCap { max_blocks: cap }),
                "{}",
                r.message
            );
        }
    }

    #[test]
    fn too_many_results_without_a_suggestion_splits() {
        assert_eq!(
            classify(
                0,
                9,
                &refusal(-32005, "query returned more than 10000 results")
            ),
            Some(LogsVerdict::Split {
                result_cap: Some(10_000)
            })
        );
        let alchemy_old = refusal(-32602, "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range and no limit on the response size, or you can request any block range with a cap of 10K logs in the response.");
        assert_eq!(
            classify(0, 9_999, &alchemy_old),
            Some(LogsVerdict::Split {
                result_cap: Some(10_000)
            })
        );
    }

    #[test]
    fn rate_limits_wait_as_told() {
        let alchemy = ProviderRefusal { http_status: Some(429), ..refusal(429, "Your app has exceeded its compute units per second capacity. If you have retries enabled, you can safely ignore this message.") };
        assert_eq!(rate_limit(&alchemy), Some(None));
        let infura = ProviderRefusal {
            http_status: Some(429),
            data: Some(
                r#"{"see":"https://infura.io/dashboard","current_rps":13.3,"allowed_rps":10.0,"backoff_seconds":30.0}"#,
            ),
            ..refusal(-32005, "project ID request rate exceeded")
        };
        assert_eq!(rate_limit(&infura), Some(Some(Duration::from_secs(30))));
        let quicknode = refusal(-32007, "15/second request limit reached");
        assert_eq!(rate_limit(&quicknode), Some(None));
        let base = ProviderRefusal {
            http_status: Some(429),
            retry_after: Some(Duration::from_secs(2)),
            ..refusal(-32016, "over rate limit")
        };
        assert_eq!(rate_limit(&base), Some(Some(Duration::from_secs(2))));
        assert_eq!(
            rate_limit(&refusal(-32005, "query returned more than 10000 results")),
            None,
            "Infura's -32005 is also its result cap"
        );
    }

    #[test]
    fn timeouts_shrink_and_the_rest_names_no_limit() {
        assert_eq!(
            classify(0, 9, &refusal(-32005, "query timeout exceeded")),
            Some(LogsVerdict::Shrink)
        );
        assert_eq!(classify(0, 9, &refusal(-32000, "header not found")), None);
        assert_eq!(
            classify(
                0,
                9,
                &refusal(-32601, "the method eth_getLogs does not exist")
            ),
            None
        );
    }

    #[test]
    fn hostile_text_never_panics() {
        for text in [
            "[",
            "[0x, ]",
            "retry with the range -",
            "exceeds limit of 99999999999999999999999",
            "up to a K",
            "[0xffffffffffffffffff, 0x1]",
        ] {
            let _ = classify(0, 10, &refusal(-32000, text));
        }
        assert_eq!(
            classify(
                5,
                10,
                &refusal(-32602, "this block range should work: [0x1, 0x3]")
            ),
            Some(LogsVerdict::Split { result_cap: None }),
            "a suggestion starting elsewhere is not taken"
        );
    }
}

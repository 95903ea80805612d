//! The JSON-RPC calls the follower asks for, their answers, and how a call
//! fails (pure): the vocabulary between the follower's state machine and the
//! driver that carries the calls to a node. The JSON encoding of each call
//! and the parsing of each answer live here too, so the driver only moves
//! bytes.
//!
//! A failure keeps what the node or the transport said (JSON-RPC code and
//! message, HTTP status and `Retry-After`, timeout or refused) so that
//! [`classify`] can tell a dead endpoint from one that refused this call,
//! one that asks us to slow down, and a range a provider will not answer.

use std::time::Duration;

use alloy_primitives::{Bytes, B256};
use serde_json::{json, Value};

use super::abi::RawLog;
use super::ids::{Address, BlockHash, TxHash};
use super::provider::{self, LogsVerdict, ProviderRefusal};

/// Names one request, so an answer finds the request it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// A block to read state at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockTag {
    Latest,
    Number(u64),
}

/// One call, as the follower wants it made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RpcCall {
    /// `eth_chainId`: which chain the endpoint serves.
    ChainId,
    /// `eth_getCode`: whether an address holds a contract.
    GetCode { address: Address, block: BlockTag },
    /// `eth_blockNumber`: the endpoint's head.
    BlockNumber,
    /// `eth_getBlockByNumber(n, false)`, for the block's hash only.
    BlockHash { number: u64 },
    /// `eth_getLogs` of one contract, any of `topics` as the first topic.
    GetLogs { address: Address, topics: Vec<B256>, from: u64, to: u64 },
    /// `eth_call` of `data` on `to` at `block`.
    Call { to: Address, data: Bytes, block: BlockTag },
    /// `eth_subscribe("newHeads")` on a WebSocket endpoint; the heads then
    /// arrive through [`crate::chain::follower::Follower::handle_head`].
    SubscribeHeads,
}

impl RpcCall {
    /// The JSON-RPC method, also the name logs give the call.
    pub fn method(&self) -> &'static str {
        match self {
            RpcCall::ChainId => "eth_chainId",
            RpcCall::GetCode { .. } => "eth_getCode",
            RpcCall::BlockNumber => "eth_blockNumber",
            RpcCall::BlockHash { .. } => "eth_getBlockByNumber",
            RpcCall::GetLogs { .. } => "eth_getLogs",
            RpcCall::Call { .. } => "eth_call",
            RpcCall::SubscribeHeads => "eth_subscribe",
        }
    }

    /// The JSON-RPC `params` array.
    pub fn params(&self) -> Value {
        match self {
            RpcCall::ChainId | RpcCall::BlockNumber => json!([]),
            RpcCall::GetCode { address, block } => json!([address.to_string(), block_tag(*block)]),
            RpcCall::BlockHash { number } => json!([quantity(*number), false]),
            RpcCall::GetLogs { address, topics, from, to } => json!([{
                "address": address.to_string(),
                "topics": [topics.iter().map(|t| t.to_string()).collect::<Vec<_>>()],
                "fromBlock": quantity(*from),
                "toBlock": quantity(*to),
            }]),
            RpcCall::Call { to, data, block } => json!([{ "to": to.to_string(), "data": data.to_string() }, block_tag(*block)]),
            RpcCall::SubscribeHeads => json!(["newHeads"]),
        }
    }

    /// Reads the JSON-RPC `result` of this call.
    pub fn parse_result(&self, result: &Value) -> Result<RpcReply, RpcFailure> {
        let malformed = |what: &str| RpcFailure::Malformed { message: format!("{} answer: {what}: {result}", self.method()) };
        Ok(match self {
            RpcCall::ChainId => RpcReply::ChainId(parse_quantity(result).ok_or_else(|| malformed("not a quantity"))?),
            RpcCall::BlockNumber => RpcReply::BlockNumber(parse_quantity(result).ok_or_else(|| malformed("not a quantity"))?),
            RpcCall::GetCode { .. } => RpcReply::Code(parse_bytes(result).ok_or_else(|| malformed("not hex data"))?),
            RpcCall::Call { .. } => RpcReply::Call(parse_bytes(result).ok_or_else(|| malformed("not hex data"))?),
            RpcCall::BlockHash { .. } => match result {
                Value::Null => RpcReply::BlockHash(None),
                block => {
                    let hash = block.get("hash").and_then(Value::as_str).ok_or_else(|| malformed("no hash"))?;
                    RpcReply::BlockHash(Some(BlockHash::parse(hash).map_err(|_| malformed("bad hash"))?))
                }
            },
            RpcCall::GetLogs { .. } => {
                let logs = result.as_array().ok_or_else(|| malformed("not an array"))?;
                RpcReply::Logs(logs.iter().map(parse_log).collect::<Option<Vec<_>>>().ok_or_else(|| malformed("a log does not parse"))?)
            }
            RpcCall::SubscribeHeads => RpcReply::Subscribed,
        })
    }
}

/// Reads a whole JSON-RPC response body to `call`: its `result`, or its
/// `error` object as [`RpcFailure::JsonRpc`].
pub fn parse_response(call: &RpcCall, body: &[u8]) -> RpcResult {
    let value: Value = serde_json::from_slice(body).map_err(|err| RpcFailure::Malformed {
        message: format!("{} answer is not JSON ({err}): {}", call.method(), String::from_utf8_lossy(&body[..body.len().min(200)])),
    })?;
    if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
        return Err(RpcFailure::JsonRpc {
            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: error.get("message").and_then(Value::as_str).unwrap_or_default().to_string(),
            data: error.get("data").filter(|d| !d.is_null()).map(|d| d.as_str().map_or_else(|| d.to_string(), str::to_string)),
        });
    }
    match value.get("result") {
        Some(result) => call.parse_result(result),
        None => Err(RpcFailure::Malformed { message: format!("{} answer has neither result nor error", call.method()) }),
    }
}

/// What a call answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RpcReply {
    ChainId(u64),
    Code(Bytes),
    BlockNumber(u64),
    /// `None`: no such block (not mined yet, or reorganised away).
    BlockHash(Option<BlockHash>),
    Logs(Vec<RawLog>),
    Call(Bytes),
    Subscribed,
}

/// How one call on one endpoint failed, as the transport saw it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RpcFailure {
    /// No answer within the call's timeout (connecting included).
    #[error("timed out after {after:?}")]
    Timeout { after: Duration },
    /// The endpoint could not be reached: connection refused, DNS, TLS.
    #[error("connecting: {message}")]
    Refused { message: String },
    /// The connection broke during the call.
    #[error("transport: {message}")]
    Transport { message: String },
    /// An HTTP status other than success, with `Retry-After` when given.
    #[error("HTTP {status}{}: {body}", retry_after.map(|d| format!(" (retry after {d:?})")).unwrap_or_default())]
    Http { status: u16, retry_after: Option<Duration>, body: String },
    /// The node answered with a JSON-RPC error object.
    #[error("JSON-RPC error {code}: {message}")]
    JsonRpc { code: i64, message: String, data: Option<String> },
    /// The answer is not what the call returns.
    #[error("malformed answer: {message}")]
    Malformed { message: String },
}

/// What a failure means for the endpoint and for the call: the one place
/// that names a failure's kind (the provider's words are read by
/// [`crate::chain::provider`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// The endpoint is not serving: count it against the endpoint and try
    /// the call on another.
    Unreachable,
    /// No answer within the call's timeout: as `Unreachable`, and for
    /// `eth_getLogs` also a sign that the range is too wide for the node.
    TimedOut,
    /// Too fast: the endpoint is healthy; wait (`Some`: as long as it said,
    /// from `Retry-After` or the error's data) and ask it the same again.
    RateLimited { wait: Option<Duration> },
    /// `eth_getLogs` refused for its range or the size of its answer: what
    /// to ask instead.
    LogsLimit(LogsVerdict),
    /// The endpoint answered and refused this call as asked (a method it
    /// lacks, a text we do not know); another endpoint would most likely say
    /// the same, so the caller decides.
    Refused,
    /// An `eth_call` reverted: the contract's answer, not a failure.
    Reverted,
}

/// The one place that reads meaning into a failure.
pub fn classify(call: &RpcCall, failure: &RpcFailure) -> FailureClass {
    let (http_status, retry_after, code, message, data) = match failure {
        RpcFailure::JsonRpc { code, message, data } => (None, None, Some(*code), message.clone(), data.clone()),
        RpcFailure::Http { status, retry_after, body } => {
            // A refusal with a status (Infura's 429, QuickNode's 413) still
            // carries the JSON-RPC error object that says why.
            let error = serde_json::from_str::<Value>(body).ok().and_then(|v| v.get("error").cloned());
            let field = |key: &str| error.as_ref().and_then(|e| e.get(key)).filter(|v| !v.is_null());
            let message = field("message").and_then(Value::as_str).map_or_else(|| body.clone(), str::to_string);
            let data = field("data").map(|d| d.as_str().map_or_else(|| d.to_string(), str::to_string));
            (Some(*status), *retry_after, field("code").and_then(Value::as_i64), message, data)
        }
        RpcFailure::Timeout { .. } => return FailureClass::TimedOut,
        RpcFailure::Refused { .. } | RpcFailure::Transport { .. } | RpcFailure::Malformed { .. } => return FailureClass::Unreachable,
    };
    // Geth and anvil answer a revert with code 3 (with data) or -32000
    // "execution reverted" (without).
    let is_call = matches!(call, RpcCall::Call { .. });
    if http_status.is_none() && is_call && (code == Some(3) || message.to_ascii_lowercase().contains("revert")) {
        return FailureClass::Reverted;
    }
    let refusal = ProviderRefusal { http_status, code, message: &message, data: data.as_deref(), retry_after };
    if let Some(wait) = provider::rate_limit(&refusal) {
        return FailureClass::RateLimited { wait };
    }
    if let RpcCall::GetLogs { from, to, .. } = call {
        if let Some(verdict) = provider::logs_limit(*from, *to, &refusal) {
            return FailureClass::LogsLimit(verdict);
        }
    }
    if http_status.is_some() {
        // A 5xx, or a 4xx that names no limit: the endpoint is not serving.
        FailureClass::Unreachable
    } else {
        FailureClass::Refused
    }
}

/// The answer to one request.
pub type RpcResult = Result<RpcReply, RpcFailure>;

/// A request the follower wants made: `call` on endpoint `endpoint`, given
/// up (and answered with [`RpcFailure::Timeout`]) after `timeout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcRequest {
    pub id: RequestId,
    pub endpoint: usize,
    pub call: RpcCall,
    pub timeout: Duration,
}

fn quantity(n: u64) -> String {
    format!("{n:#x}")
}

fn block_tag(tag: BlockTag) -> String {
    match tag {
        BlockTag::Latest => "latest".into(),
        BlockTag::Number(n) => quantity(n),
    }
}

/// `"0x1a"` -> 26.
pub(crate) fn parse_quantity(value: &Value) -> Option<u64> {
    let text = value.as_str()?;
    let digits = text.strip_prefix("0x")?;
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

fn parse_bytes(value: &Value) -> Option<Bytes> {
    value.as_str()?.parse().ok()
}

fn parse_log(value: &Value) -> Option<RawLog> {
    let text = |key: &str| value.get(key).and_then(Value::as_str);
    let optional_number = |key: &str| match value.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(v) => parse_quantity(v).map(Some),
    };
    let topics = value
        .get("topics")?
        .as_array()?
        .iter()
        .map(|t| t.as_str().and_then(|t| t.parse::<B256>().ok()))
        .collect::<Option<Vec<_>>>()?;
    Some(RawLog {
        address: Address::parse(text("address")?).ok()?,
        topics,
        data: text("data")?.parse().ok()?,
        block_number: optional_number("blockNumber")?,
        block_hash: match text("blockHash") {
            Some(h) => Some(BlockHash::parse(h).ok()?),
            None => None,
        },
        tx_hash: match text("transactionHash") {
            Some(h) => Some(TxHash::parse(h).ok()?),
            None => None,
        },
        log_index: optional_number("logIndex")?,
        removed: value.get("removed").and_then(Value::as_bool).unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn calls_encode_as_nodes_expect() {
        let contract = Address([0xab; 20]);
        let logs = RpcCall::GetLogs { address: contract, topics: vec![B256::repeat_byte(1)], from: 16, to: 31 };
        assert_eq!(logs.method(), "eth_getLogs");
        let params = logs.params();
        assert_eq!(params[0]["fromBlock"], "0x10");
        assert_eq!(params[0]["toBlock"], "0x1f");
        assert_eq!(params[0]["address"], contract.to_string());
        assert_eq!(params[0]["topics"][0][0], B256::repeat_byte(1).to_string());
        assert_eq!(RpcCall::BlockHash { number: 255 }.params(), json!(["0xff", false]));
        let call = RpcCall::Call { to: contract, data: Bytes::from(vec![1, 2]), block: BlockTag::Number(7) };
        assert_eq!(call.params(), json!([{ "to": contract.to_string(), "data": "0x0102" }, "0x7"]));
        assert_eq!(RpcCall::GetCode { address: contract, block: BlockTag::Latest }.params()[1], "latest");
    }

    #[test]
    fn answers_parse_and_garbage_is_malformed_not_a_panic() {
        assert_eq!(RpcCall::BlockNumber.parse_result(&json!("0x2a")), Ok(RpcReply::BlockNumber(42)));
        assert_eq!(RpcCall::ChainId.parse_result(&json!("0x7a69")), Ok(RpcReply::ChainId(31337)));
        assert!(matches!(RpcCall::BlockNumber.parse_result(&json!(42)), Err(RpcFailure::Malformed { .. })));
        assert!(matches!(RpcCall::BlockNumber.parse_result(&json!("0x")), Err(RpcFailure::Malformed { .. })));
        let hash = format!("0x{}", "11".repeat(32));
        assert_eq!(
            RpcCall::BlockHash { number: 1 }.parse_result(&json!({ "hash": hash, "number": "0x1" })),
            Ok(RpcReply::BlockHash(Some(BlockHash([0x11; 32]))))
        );
        assert_eq!(RpcCall::BlockHash { number: 9 }.parse_result(&Value::Null), Ok(RpcReply::BlockHash(None)));
        let log = json!({
            "address": format!("0x{}", "ab".repeat(20)),
            "topics": [format!("0x{}", "01".repeat(32))],
            "data": "0x00ff",
            "blockNumber": "0x9",
            "blockHash": hash,
            "transactionHash": format!("0x{}", "22".repeat(32)),
            "logIndex": "0x3",
            "removed": false
        });
        let call = RpcCall::GetLogs { address: Address([0xab; 20]), topics: vec![], from: 0, to: 9 };
        let Ok(RpcReply::Logs(parsed)) = call.parse_result(&json!([log])) else { panic!("logs") };
        assert_eq!(parsed[0].block_number, Some(9));
        assert_eq!(parsed[0].log_index, Some(3));
        assert_eq!(parsed[0].data, Bytes::from(vec![0, 0xff]));
        assert!(matches!(call.parse_result(&json!([{ "address": "nope" }])), Err(RpcFailure::Malformed { .. })));
    }

    #[test]
    fn whole_responses_give_the_result_or_the_error_object() {
        let ok = br#"{"jsonrpc":"2.0","id":1,"result":"0x10"}"#;
        assert_eq!(parse_response(&RpcCall::BlockNumber, ok), Ok(RpcReply::BlockNumber(16)));
        let refused = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Log response size exceeded. this block range should work: [0x1, 0x2]"}}"#;
        assert_eq!(
            parse_response(&RpcCall::BlockNumber, refused),
            Err(RpcFailure::JsonRpc { code: -32602, message: "Log response size exceeded. this block range should work: [0x1, 0x2]".into(), data: None })
        );
        let reverted = br#"{"jsonrpc":"2.0","id":1,"error":{"code":3,"message":"execution reverted","data":"0x7e273289"}}"#;
        assert!(matches!(parse_response(&RpcCall::BlockNumber, reverted), Err(RpcFailure::JsonRpc { code: 3, data: Some(d), .. }) if d == "0x7e273289"));
        assert!(matches!(parse_response(&RpcCall::BlockNumber, b"<html>"), Err(RpcFailure::Malformed { .. })));
        assert!(matches!(parse_response(&RpcCall::BlockNumber, b"{}"), Err(RpcFailure::Malformed { .. })));
    }

    #[test]
    fn failures_are_told_apart() {
        let call = RpcCall::Call {
            to: Address::ZERO,
            data: Bytes::new(),
            block: BlockTag::Latest,
        };
        let revert = RpcFailure::JsonRpc {
            code: 3,
            message: "execution reverted".into(),
            data: Some("0x7e27".into()),
        };
        assert_eq!(classify(&call, &revert), FailureClass::Reverted);
        let bare = RpcFailure::JsonRpc {
            code: -32000,
            message: "execution reverted".into(),
            data: None,
        };
        assert_eq!(classify(&call, &bare), FailureClass::Reverted);
        let range = RpcFailure::JsonRpc {
            code: -32602,
            message: "block range too large".into(),
            data: None,
        };
        let logs = RpcCall::GetLogs {
            address: Address::ZERO,
            topics: vec![],
            from: 0,
            to: 1,
        };
        assert_eq!(
            classify(&logs, &range),
            FailureClass::LogsLimit(LogsVerdict::Split { result_cap: None })
        );
        assert_eq!(
            classify(&call, &range),
            FailureClass::Refused,
            "only eth_getLogs has a range to narrow"
        );
        let unknown = RpcFailure::JsonRpc {
            code: -32000,
            message: "header not found".into(),
            data: None,
        };
        assert_eq!(classify(&logs, &unknown), FailureClass::Refused);
        assert_eq!(
            classify(
                &logs,
                &RpcFailure::Timeout {
                    after: Duration::from_secs(1)
                }
            ),
            FailureClass::TimedOut
        );
        assert_eq!(
            classify(
                &logs,
                &RpcFailure::Refused {
                    message: "connection refused".into()
                }
            ),
            FailureClass::Unreachable
        );
        let bad_gateway = RpcFailure::Http {
            status: 502,
            retry_after: None,
            body: "<html>".into(),
        };
        assert_eq!(classify(&call, &bad_gateway), FailureClass::Unreachable);
    }

    #[test]
    fn a_rate_limit_is_not_a_dead_endpoint_whatever_the_call() {
        // Base's public endpoint: 429, -32016, Retry-After.
        let base = RpcFailure::Http {
            status: 429,
            retry_after: Some(Duration::from_secs(2)),
            body: r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32016,"message":"over rate limit"}}"#
                .into(),
        };
        assert_eq!(
            base.to_string(),
            format!(
                "HTTP 429 (retry after 2s): {}",
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32016,"message":"over rate limit"}}"#
            )
        );
        let logs = RpcCall::GetLogs {
            address: Address::ZERO,
            topics: vec![],
            from: 0,
            to: 1,
        };
        for call in [logs.clone(), RpcCall::BlockNumber, RpcCall::ChainId] {
            assert_eq!(
                classify(&call, &base),
                FailureClass::RateLimited {
                    wait: Some(Duration::from_secs(2))
                }
            );
        }
        // Infura: the wait in the error's data.
        let infura = RpcFailure::Http {
            status: 429,
            retry_after: None,
            body: r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"project ID request rate exceeded","data":{"backoff_seconds":30.0}}}"#.into(),
        };
        assert_eq!(
            classify(&logs, &infura),
            FailureClass::RateLimited {
                wait: Some(Duration::from_secs(30))
            }
        );
        // QuickNode: HTTP 200 with -32007.
        let quicknode = RpcFailure::JsonRpc {
            code: -32007,
            message: "15/second request limit reached".into(),
            data: None,
        };
        assert_eq!(
            classify(&RpcCall::BlockNumber, &quicknode),
            FailureClass::RateLimited { wait: None }
        );
        // QuickNode's 413 names its cap.
        let capped = RpcFailure::Http {
            status: 413,
            retry_after: None,
            body: r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32614,"message":"eth_getLogs is limited to a 10,000 range"}}"#.into(),
        };
        let wide = RpcCall::GetLogs {
            address: Address::ZERO,
            topics: vec![],
            from: 0,
            to: 99_999,
        };
        assert_eq!(
            classify(&wide, &capped),
            FailureClass::LogsLimit(LogsVerdict::SpanCap { max_blocks: 10_000 })
        );
    }
}

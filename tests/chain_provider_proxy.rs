//! The fault-injecting provider proxy (tests/src/provider_proxy.rs) in front
//! of a real anvil holding a real history: each provider's limits refuse what
//! they should in that provider's words and status, what fits is anvil's own
//! answer, suggested ranges really fit, rate limits come with and without
//! `Retry-After`, slow ranges stall. Spoken to on the wire, not through alloy,
//! so the statuses and headers alloy hides are checked too.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use alloy::providers::Provider;
use gateway_tests::history::History;
use gateway_tests::provider_limits::{ProviderLimits, RateLimit, RefusalKind};
use gateway_tests::provider_proxy::{post, Fault, ProviderProxy, RawAnswer};
use serde_json::{json, Value};

fn get_logs(history: &History, from: u64, to: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": 7, "method": "eth_getLogs", "params": [{
        "address": format!("{:#x}", history.contract()),
        "fromBlock": format!("{from:#x}"),
        "toBlock": format!("{to:#x}"),
    }]})
}

async fn ask(proxy: &ProviderProxy, body: &Value) -> RawAnswer {
    post(proxy.addr, body).await.unwrap()
}

fn message(answer: &RawAnswer) -> String {
    answer.body["error"]["message"].as_str().unwrap_or_else(|| panic!("not an error: {}", answer.body)).to_string()
}

/// Logs of the contract in `[from, to]` as anvil itself counts them, asked
/// directly (each grant is ERC-721's Transfer and NodeAccessGranted; the
/// deployment adds Ownable's OwnershipTransferred).
async fn logs_between(history: &History, from: u64, to: u64) -> usize {
    let filter = alloy::rpc::types::Filter::new().address(history.contract()).from_block(from).to_block(to);
    history.chain.admin.provider().get_logs(&filter).await.unwrap().len()
}

/// The first `[0x…, 0x…]` or `[0x…, 0x…].` range in a message.
fn bracketed_range(text: &str) -> (u64, u64) {
    let inside = text.split('[').nth(1).and_then(|rest| rest.split(']').next()).unwrap();
    let (from, to) = inside.split_once(',').unwrap();
    let hex = |s: &str| u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).unwrap();
    (hex(from), hex(to))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_provider_refuses_in_its_own_words_and_its_suggestions_fit() {
    let history = History::build(1_500, 150).await.unwrap();
    let start = history.chain.deploy_block;
    let proxy = ProviderProxy::start(&history.chain.http_url(), ProviderLimits::unlimited(gateway_tests::provider_limits::ProviderStyle::Alchemy)).await.unwrap();

    // No limits: anvil's own answer, every log.
    let all = ask(&proxy, &get_logs(&history, start, history.head)).await;
    assert_eq!(all.status, 200);
    assert_eq!(all.body["result"].as_array().unwrap().len(), logs_between(&history, start, history.head).await);
    assert_eq!(all.body["id"], 7, "the caller's id comes back");

    // Alchemy's free tier: 500 blocks, and the range it suggests is served.
    proxy.set_limits(ProviderLimits::alchemy_free());
    let refused = ask(&proxy, &get_logs(&history, start, start + 600)).await;
    assert_eq!(refused.body["error"]["code"], -32600);
    assert!(message(&refused).starts_with("You can make eth_getLogs requests with up to a 500 block range."), "{}", message(&refused));
    let (from, to) = bracketed_range(&message(&refused));
    assert_eq!((from, to), (start, start + 499));
    let served = ask(&proxy, &get_logs(&history, from, to)).await;
    assert_eq!(served.body["result"].as_array().unwrap().len(), logs_between(&history, from, to).await);

    // Infura: at most 50 results here; the suggestion holds at most 50 and the rest follows.
    proxy.set_limits(ProviderLimits { max_results: Some(50), ..ProviderLimits::infura() });
    let refused = ask(&proxy, &get_logs(&history, start, history.head)).await;
    assert_eq!(refused.body["error"]["code"], -32005);
    assert!(message(&refused).starts_with("query returned more than 50 results. Try with this block range [0x"), "{}", message(&refused));
    let (from, to) = bracketed_range(&message(&refused));
    assert_eq!(refused.body["error"]["data"]["to"], format!("0x{to:X}"));
    let served = ask(&proxy, &get_logs(&history, from, to)).await;
    let fitted = served.body["result"].as_array().unwrap().len();
    assert!(fitted <= 50 && fitted == logs_between(&history, from, to).await, "{fitted} logs in the suggested range");
    assert!(logs_between(&history, from, to + 1).await > 50 || to == history.head, "the suggestion is the widest that fits");
    let wide = ask(&proxy, &get_logs(&history, start, start + 10_000)).await;
    assert!(message(&wide).starts_with("range 10001 exceeds limit of 10000"), "{}", message(&wide));

    // QuickNode: HTTP 413 for a range over its cap.
    proxy.set_limits(ProviderLimits { max_range: Some(1_000), ..ProviderLimits::quicknode() });
    let refused = ask(&proxy, &get_logs(&history, start, start + 1_000)).await;
    assert_eq!((refused.status, refused.body["error"]["code"].as_i64()), (413, Some(-32614)));
    assert_eq!(message(&refused), "eth_getLogs is limited to a 1,000 range");
    assert_eq!(ask(&proxy, &get_logs(&history, start, start + 999)).await.status, 200);

    // A public reth node on Base: a decimal "retry with the range" that is the refused range itself.
    proxy.set_limits(ProviderLimits { max_results: Some(50), ..ProviderLimits::public_node() });
    let refused = ask(&proxy, &get_logs(&history, start, history.head)).await;
    assert_eq!(message(&refused), format!("query exceeds max results 50, retry with the range {start}-{}", history.head));

    // What the proxy saw, in order, with the limit that refused each.
    let kinds: Vec<Option<RefusalKind>> = proxy.get_logs_calls().iter().map(|c| c.refused).collect();
    use RefusalKind::*;
    assert_eq!(
        kinds,
        [None, Some(RangeTooWide), None, Some(TooManyResults), None, Some(RangeTooWide), Some(RangeTooWide), None, Some(TooManyResults)]
    );
    assert_eq!(proxy.get_logs_calls()[0].range, Some((start, history.head)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_with_and_without_retry_after_and_slow_ranges_stall() {
    let history = History::build(400, 20).await.unwrap();
    let start = history.chain.deploy_block;
    let block_number = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []});

    // A public node's 429 with Retry-After; the call after it is served.
    let proxy = ProviderProxy::start(&history.chain.http_url(), ProviderLimits::public_node()).await.unwrap();
    proxy.inject(Fault::RateLimited { retry_after: Some(Duration::from_secs(2)) });
    let limited = ask(&proxy, &block_number).await;
    assert_eq!((limited.status, limited.retry_after.as_deref()), (429, Some("2")));
    assert_eq!(limited.body["error"], json!({"code": -32016, "message": "over rate limit"}));
    let served = ask(&proxy, &block_number).await;
    assert_eq!(served.body["result"], format!("{:#x}", history.head));

    // Alchemy's 429 carries no Retry-After.
    proxy.set_limits(ProviderLimits::alchemy_paid());
    proxy.inject(Fault::RateLimited { retry_after: None });
    let limited = ask(&proxy, &block_number).await;
    assert_eq!((limited.status, limited.retry_after.as_deref()), (429, None));
    assert!(message(&limited).starts_with("Your app has exceeded its compute units per second capacity."));

    // QuickNode over its rate: HTTP 200 and -32007, from its own per-second window.
    proxy.set_limits(ProviderLimits { rate_limit: Some(RateLimit { per_second: 3, retry_after: None }), ..ProviderLimits::quicknode() });
    let mut answers = Vec::new();
    for _ in 0..10 {
        answers.push(ask(&proxy, &block_number).await);
    }
    let limited: Vec<&RawAnswer> = answers.iter().filter(|a| a.body.get("error").is_some()).collect();
    assert!(!limited.is_empty(), "10 calls at once exceed 3 a second");
    assert!(limited.iter().all(|a| a.status == 200 && message(a) == "3/second request limit reached"));

    // Infura: a wide range stalls, then "query timeout exceeded"; a narrow one is quick.
    proxy.set_limits(ProviderLimits { slow_range: Some((100, Duration::from_millis(600))), ..ProviderLimits::infura() });
    let began = Instant::now();
    let timed_out = ask(&proxy, &get_logs(&history, start, start + 200)).await;
    assert!(began.elapsed() >= Duration::from_millis(600));
    assert_eq!(timed_out.body["error"], json!({"code": -32005, "message": "query timeout exceeded"}));
    assert_eq!(ask(&proxy, &get_logs(&history, start, start + 99)).await.status, 200);

    // Elsewhere a stalled query is a connection closed unanswered; so is a scripted hang.
    proxy.set_limits(ProviderLimits { slow_range: Some((100, Duration::from_millis(100))), ..ProviderLimits::alchemy_paid() });
    assert!(post(proxy.addr, &get_logs(&history, start, start + 200)).await.is_err());
    proxy.inject(Fault::Hang(Duration::from_millis(100)));
    assert!(post(proxy.addr, &block_number).await.is_err());

    // A batch: each call judged on its own, one answer array.
    proxy.set_limits(ProviderLimits { max_range: Some(50), ..ProviderLimits::infura() });
    let batch = ask(&proxy, &json!([block_number, get_logs(&history, start, start + 60)])).await;
    let answers = batch.body.as_array().unwrap();
    assert_eq!(answers.len(), 2);
    assert!(answers[0].get("result").is_some() && answers[1].get("error").is_some(), "{batch:?}");

    // alloy, through the proxy, meets the same chain as through anvil directly.
    let via_proxy = alloy::providers::ProviderBuilder::new().connect(&proxy.http_url()).await.unwrap();
    assert_eq!(via_proxy.get_block_number().await.unwrap(), history.head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_clients_meet_the_same_limits_and_still_get_their_subscriptions() {
    use futures::StreamExt;

    let history = History::build(700, 30).await.unwrap();
    let start = history.chain.deploy_block;
    let proxy = ProviderProxy::start_with_ws(&history.chain.http_url(), &history.chain.ws_url(), ProviderLimits::alchemy_free())
        .await
        .unwrap();
    let ws = alloy::providers::ProviderBuilder::new()
        .connect_ws(alloy::providers::WsConnect::new(proxy.ws_url().unwrap()))
        .await
        .unwrap();
    assert_eq!(ws.get_block_number().await.unwrap(), history.head);

    // A range over Alchemy's 500 blocks is refused over the socket too, in the same words.
    let filter = alloy::rpc::types::Filter::new().address(history.contract()).from_block(start).to_block(start + 600);
    let refused = ws.get_logs(&filter).await.unwrap_err();
    let text = refused.to_string();
    assert!(text.contains("this block range should work"), "{text}");
    let fits = alloy::rpc::types::Filter::new().address(history.contract()).from_block(start).to_block(start + 499);
    assert_eq!(ws.get_logs(&fits).await.unwrap().len(), logs_between(&history, start, start + 499).await);

    // Subscriptions are anvil's own: a mined block arrives.
    let mut heads = ws.subscribe_blocks().await.unwrap().into_stream();
    history.chain.mine(1).await;
    let head = tokio::time::timeout(Duration::from_secs(10), heads.next()).await.unwrap().unwrap();
    assert_eq!(head.number, history.head + 1);
    assert!(proxy.get_logs_calls().iter().any(|c| c.refused == Some(RefusalKind::RangeTooWide)));
}

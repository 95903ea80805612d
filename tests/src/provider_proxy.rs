//! A fault-injecting JSON-RPC proxy in front of a real anvil (I/O edge: tokio
//! sockets on loopback). It speaks plain HTTP/1.1 with keep-alive, forwards
//! every call to anvil, and answers `eth_getLogs` as a hosted provider would:
//! ranges too wide and answers too large are refused in that provider's exact
//! words (`provider_limits`), requests over the rate get its 429, wide ranges
//! stall. A test can also script faults for the next requests, and reads back
//! every call the proxy saw: the ranges asked, and what was refused.
//!
//! WebSocket clients get the same judgement on a second port: their calls go
//! through the same limits (answered from anvil's HTTP endpoint), their
//! subscriptions are relayed to anvil's WebSocket.
//!
//! This is the mock the standards allow: anvil has no provider limits to turn
//! on, so they are put in front of it; the chain behind is real.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::provider_limits::{ProviderLimits, RateWindow, Refusal, RefusalKind};

/// A fault for the next request, whatever the limits say.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Refused as over the rate, in the provider's shape, with this `Retry-After`.
    RateLimited { retry_after: Option<Duration> },
    /// Held this long, then the connection is closed unanswered.
    Hang(Duration),
    /// Infura's "query timeout exceeded", at once.
    QueryTimeout,
    /// The inner fault on the next `eth_getLogs`; other calls pass it by.
    OnLogs(Box<Fault>),
}

/// One call the proxy saw (a batch counts each of its calls).
#[derive(Clone, Debug, PartialEq)]
pub struct CallRecord {
    pub method: String,
    /// `eth_getLogs` only: the block range asked, tags resolved.
    pub range: Option<(u64, u64)>,
    /// The limit or scripted fault that refused it; `None` when anvil's answer went back.
    pub refused: Option<RefusalKind>,
    /// Logs in the answer (`eth_getLogs` served).
    pub logs: usize,
    /// `eth_getLogs` only: the filter as sent (address, topics).
    pub filter: Option<Value>,
    /// When the proxy received it (a retry's wait is read from two of these).
    pub at: Instant,
}

struct Shared {
    limits: ProviderLimits,
    window: RateWindow,
    faults: VecDeque<Fault>,
    calls: Vec<CallRecord>,
}

pub struct ProviderProxy {
    pub addr: SocketAddr,
    /// The WebSocket side, when started with [`ProviderProxy::start_with_ws`].
    pub ws_addr: Option<SocketAddr>,
    shared: Arc<Mutex<Shared>>,
    listeners: Vec<JoinHandle<()>>,
}

/// What one HTTP request turns into.
enum Reply {
    Answer { status: u16, body: Value, retry_after: Option<Duration> },
    /// Close the connection without a word (a hung or dropped request).
    Silence,
}

impl ProviderProxy {
    /// Listens on 127.0.0.1 (an OS-chosen port) in front of anvil's HTTP endpoint `upstream`.
    pub async fn start(upstream: &str, limits: ProviderLimits) -> anyhow::Result<Self> {
        let upstream = upstream_addr(upstream)?;
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the provider proxy")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared {
            limits,
            window: RateWindow::default(),
            faults: VecDeque::new(),
            calls: Vec::new(),
        }));
        let state = shared.clone();
        let listener = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_connection(stream, upstream, state.clone()));
            }
        });
        Ok(Self { addr, ws_addr: None, shared, listeners: vec![listener] })
    }

    /// Both sides: HTTP in front of `upstream_http`, WebSocket relaying
    /// subscriptions to `upstream_ws` (anvil serves both on one port).
    pub async fn start_with_ws(upstream_http: &str, upstream_ws: &str, limits: ProviderLimits) -> anyhow::Result<Self> {
        let mut proxy = Self::start(upstream_http, limits).await?;
        let upstream = upstream_addr(upstream_http)?;
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the WebSocket side")?;
        proxy.ws_addr = Some(listener.local_addr()?);
        let (state, upstream_ws) = (proxy.shared.clone(), upstream_ws.to_string());
        proxy.listeners.push(tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_websocket(stream, upstream, upstream_ws.clone(), state.clone()));
            }
        }));
        Ok(proxy)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self) -> Option<String> {
        self.ws_addr.map(|addr| format!("ws://{addr}"))
    }

    /// The next request meets `fault` (faults queue up in order).
    pub fn inject(&self, fault: Fault) {
        self.with(|s| s.faults.push_back(fault));
    }

    pub fn set_limits(&self, limits: ProviderLimits) {
        self.with(|s| s.limits = limits);
    }

    /// Every call so far, in the order the proxy answered them.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.with(|s| s.calls.clone())
    }

    /// The `eth_getLogs` calls so far.
    pub fn get_logs_calls(&self) -> Vec<CallRecord> {
        self.calls().into_iter().filter(|c| c.method == "eth_getLogs").collect()
    }

    pub fn clear_calls(&self) {
        self.with(|s| s.calls.clear());
    }

    fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        f(&mut self.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

impl Drop for ProviderProxy {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.abort();
        }
    }
}

fn upstream_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let host_port = url.strip_prefix("http://").context("the proxy forwards to an http:// endpoint")?;
    host_port.trim_end_matches('/').parse().with_context(|| format!("{url} is not http://IP:PORT"))
}

async fn serve_connection(mut stream: TcpStream, upstream: SocketAddr, shared: Arc<Mutex<Shared>>) {
    let mut carry = Vec::new();
    loop {
        let Ok(Some((head, body))) = read_message(&mut stream, &mut carry, true).await else { return };
        let keep_alive = !head.to_ascii_lowercase().contains("connection: close");
        match handle(&body, upstream, &shared).await {
            Reply::Silence => return,
            Reply::Answer { status, body, retry_after } => {
                let body = body.to_string();
                let mut response = format!(
                    "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                    reason(status),
                    body.len()
                );
                if let Some(wait) = retry_after {
                    // RFC 9110 section 10.2.3: delay-seconds, a whole number.
                    response.push_str(&format!("retry-after: {}\r\n", wait.as_secs_f64().ceil() as u64));
                }
                response.push_str("\r\n");
                response.push_str(&body);
                if stream.write_all(response.as_bytes()).await.is_err() || !keep_alive {
                    return;
                }
            }
        }
    }
}

/// One WebSocket client: calls are judged one at a time, in order, as over
/// HTTP; `eth_subscribe`/`eth_unsubscribe` and anvil's pushes are relayed.
/// A hang or a refusal that closes an HTTP connection closes the socket.
async fn serve_websocket(stream: TcpStream, upstream: SocketAddr, upstream_ws: String, shared: Arc<Mutex<Shared>>) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let Ok(client) = tokio_tungstenite::accept_async(stream).await else { return };
    let Ok((anvil, _)) = tokio_tungstenite::connect_async(upstream_ws.as_str()).await else { return };
    let (mut to_client, mut from_client) = client.split();
    let (mut to_anvil, mut from_anvil) = anvil.split();
    loop {
        tokio::select! {
            incoming = from_client.next() => {
                let Some(Ok(Message::Text(text))) = incoming else {
                    match incoming {
                        Some(Ok(_)) => continue, // pings and pongs are tungstenite's
                        _ => return,
                    }
                };
                let method = serde_json::from_str::<Value>(text.as_str())
                    .ok()
                    .and_then(|call| call.get("method").and_then(Value::as_str).map(str::to_string));
                if matches!(method.as_deref(), Some("eth_subscribe" | "eth_unsubscribe")) {
                    if to_anvil.send(Message::text(text.as_str())).await.is_err() {
                        return;
                    }
                    continue;
                }
                match handle(text.as_bytes(), upstream, &shared).await {
                    Reply::Silence => return,
                    Reply::Answer { body, .. } => {
                        if to_client.send(Message::text(body.to_string())).await.is_err() {
                            return;
                        }
                    }
                }
            }
            pushed = from_anvil.next() => {
                let Some(Ok(message)) = pushed else { return };
                if message.is_text() && to_client.send(message).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        502 => "Bad Gateway",
        _ => "Status",
    }
}

/// One request body: a call or a batch. A refusal with an HTTP status other
/// than 200 (a 429, QuickNode's 413) answers the whole request with it.
async fn handle(body: &[u8], upstream: SocketAddr, shared: &Arc<Mutex<Shared>>) -> Reply {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return Reply::Answer { status: 400, body: json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "Parse error"}}), retry_after: None };
    };
    let (calls, batch) = match request {
        Value::Array(calls) => (calls, true),
        call => (vec![call], false),
    };
    let mut answers = Vec::with_capacity(calls.len());
    let mut status = 200;
    let mut retry_after = None;
    for call in calls {
        match handle_call(call, upstream, shared).await {
            Reply::Silence => return Reply::Silence,
            Reply::Answer { status: s, body, retry_after: r } => {
                if s != 200 {
                    status = s;
                    retry_after = r.or(retry_after);
                }
                answers.push(body);
            }
        }
    }
    let body = if batch { Value::Array(answers) } else { answers.pop().unwrap_or(Value::Null) };
    Reply::Answer { status, body, retry_after }
}

async fn handle_call(call: Value, upstream: SocketAddr, shared: &Arc<Mutex<Shared>>) -> Reply {
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    let method = call.get("method").and_then(Value::as_str).unwrap_or_default().to_string();
    let refuse = |refusal: Refusal| Reply::Answer {
        status: refusal.http_status,
        body: json!({"jsonrpc": "2.0", "id": id, "error": refusal.error}),
        retry_after: refusal.retry_after,
    };
    let record = |shared: &Arc<Mutex<Shared>>, record: CallRecord| {
        shared.lock().unwrap_or_else(|p| p.into_inner()).calls.push(record);
    };
    let filter = (method == "eth_getLogs").then(|| call.get("params").and_then(|p| p.get(0)).cloned()).flatten();
    let mut entry = CallRecord { method: method.clone(), range: None, refused: None, logs: 0, filter, at: Instant::now() };
    // Known before any fault, so a refused call's range is recorded too.
    entry.range = if method == "eth_getLogs" { log_range(&call, upstream).await } else { None };

    // Scripted faults first, then the rate, as a provider's edge would.
    let (fault, limits, over_rate) = {
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        let fault = match s.faults.front() {
            Some(Fault::OnLogs(_)) if method != "eth_getLogs" => None,
            Some(_) => s.faults.pop_front().map(|f| match f {
                Fault::OnLogs(inner) => *inner,
                other => other,
            }),
            None => None,
        };
        let limits = s.limits.clone();
        let over_rate = match &limits.rate_limit {
            Some(limit) if fault.is_none() => !s.window.admit(limit, Instant::now()),
            _ => false,
        };
        (fault, limits, over_rate)
    };
    match fault {
        Some(Fault::RateLimited { retry_after }) => {
            let mut refusal = limits.rate_limited();
            refusal.retry_after = retry_after;
            entry.refused = Some(RefusalKind::RateLimited);
            record(shared, entry);
            return refuse(refusal);
        }
        Some(Fault::Hang(wait)) => {
            entry.refused = Some(RefusalKind::TimedOut);
            record(shared, entry);
            tokio::time::sleep(wait).await;
            return Reply::Silence;
        }
        Some(Fault::QueryTimeout) => {
            entry.refused = Some(RefusalKind::TimedOut);
            record(shared, entry);
            return refuse(ProviderLimits::infura().timed_out().unwrap_or_else(|| ProviderLimits::infura().rate_limited()));
        }
        // Unwrapped when it was popped.
        Some(Fault::OnLogs(_)) | None => {}
    }
    if over_rate {
        entry.refused = Some(RefusalKind::RateLimited);
        record(shared, entry);
        return refuse(limits.rate_limited());
    }

    let range = entry.range;
    if let Some((from, to)) = range {
        if let Some(refusal) = limits.check_range(from, to) {
            entry.refused = Some(refusal.kind);
            record(shared, entry);
            return refuse(refusal);
        }
        if let Some(stall) = limits.stall_for(from, to) {
            entry.refused = Some(RefusalKind::TimedOut);
            record(shared, entry);
            tokio::time::sleep(stall).await;
            return limits.timed_out().map_or(Reply::Silence, refuse);
        }
    }

    let answer = match forward(upstream, &call).await {
        Ok(answer) => answer,
        Err(err) => {
            record(shared, entry);
            return Reply::Answer {
                status: 502,
                body: json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": format!("proxy: anvil did not answer: {err:#}")}}),
                retry_after: None,
            };
        }
    };
    if let (Some((from, to)), Some(logs)) = (range, answer.get("result").and_then(Value::as_array)) {
        let blocks: Vec<u64> = logs.iter().filter_map(|log| log.get("blockNumber").and_then(hex_u64)).collect();
        entry.logs = logs.len();
        if let Some(refusal) = limits.check_results(from, to, &blocks) {
            entry.refused = Some(refusal.kind);
            record(shared, entry);
            return refuse(refusal);
        }
    }
    record(shared, entry);
    Reply::Answer { status: 200, body: answer, retry_after: None }
}

/// The block range of an `eth_getLogs` call, with `latest` (or an absent bound)
/// resolved against anvil's head; `None` for a `blockHash` filter.
async fn log_range(call: &Value, upstream: SocketAddr) -> Option<(u64, u64)> {
    let filter = call.get("params")?.get(0)?;
    if filter.get("blockHash").is_some() {
        return None;
    }
    let bound = |key: &str| match filter.get(key).and_then(Value::as_str) {
        Some("earliest") => Some(0),
        Some(text) if text.starts_with("0x") => u64::from_str_radix(&text[2..], 16).ok(),
        _ => None,
    };
    let (from, to) = (bound("fromBlock"), bound("toBlock"));
    let head = if from.is_none() || to.is_none() {
        let ask = json!({"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber", "params": []});
        forward(upstream, &ask).await.ok()?.get("result").and_then(hex_u64)
    } else {
        None
    };
    Some((from.or(head)?, to.or(head)?))
}

fn hex_u64(value: &Value) -> Option<u64> {
    u64::from_str_radix(value.as_str()?.strip_prefix("0x")?, 16).ok()
}

/// Sends one call to anvil and returns its JSON answer.
async fn forward(upstream: SocketAddr, call: &Value) -> anyhow::Result<Value> {
    Ok(post(upstream, call).await?.body)
}

/// An HTTP answer as a client sees it on the wire: what alloy hides (the
/// status, `Retry-After`) is what the proxy tests check.
#[derive(Clone, Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Value,
}

/// POSTs one JSON-RPC body on a fresh connection (`connection: close`).
pub async fn post(addr: SocketAddr, body: &Value) -> anyhow::Result<RawAnswer> {
    let mut stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    let body = body.to_string();
    let request = format!(
        "POST / HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let (head, body) = read_message(&mut stream, &mut Vec::new(), false).await?.context("closed unanswered")?;
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).context("no HTTP status")?;
    let retry_after = head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case("retry-after").then(|| value.trim().to_string())
    });
    let body = serde_json::from_slice(&body).context("the answer is not JSON")?;
    Ok(RawAnswer { status, retry_after, body })
}

/// Reads one HTTP/1.1 message: its head and body (by content-length, chunked,
/// or to the end of the stream for a response without either). `None` at a
/// clean end of stream before a message starts. Bytes read past the message
/// (a pipelined next request) stay in `carry` for the next call.
async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    carry: &mut Vec<u8>,
    is_request: bool,
) -> anyhow::Result<Option<(String, Vec<u8>)>> {
    let mut buf = std::mem::take(carry);
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            anyhow::ensure!(buf.is_empty(), "the stream ended inside a message head");
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        anyhow::ensure!(buf.len() < 64 * 1024, "message head over 64 KiB");
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut body = buf[head_end + 4..].to_vec();
    let header = |name: &str| {
        head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_string())
        })
    };
    if let Some(length) = header("content-length") {
        let length: usize = length.parse().context("content-length")?;
        while body.len() < length {
            let mut chunk = vec![0u8; (length - body.len()).min(64 * 1024)];
            let n = stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "the stream ended inside a message body");
            body.extend_from_slice(&chunk[..n]);
        }
        *carry = body.split_off(length);
    } else if !is_request {
        stream.read_to_end(&mut body).await?;
        if header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
            body = dechunk(&body)?;
        }
    }
    Ok(Some((head, body)))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// Decodes a complete chunked body (RFC 9112 section 7.1).
fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").context("chunk size line")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).context("chunk size")?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        anyhow::ensure!(data.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(dechunk(b"4\r\nWiki\r\n5;x=1\r\npedia\r\n0\r\n\r\n").unwrap(), b"Wikipedia");
        assert!(dechunk(b"9\r\nshort\r\n").is_err());
    }

    #[tokio::test]
    async fn a_message_is_read_by_its_length_and_the_next_one_stays() {
        let data = b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n".to_vec();
        let mut reader = std::io::Cursor::new(data);
        let mut carry = Vec::new();
        let (head, body) = read_message(&mut reader, &mut carry, true).await.unwrap().unwrap();
        assert!(head.starts_with("POST / HTTP/1.1"));
        assert_eq!(body, b"{}");
        let (_, second) = read_message(&mut reader, &mut carry, true).await.unwrap().unwrap();
        assert!(second.is_empty());
        assert!(read_message(&mut reader, &mut carry, true).await.unwrap().is_none(), "then a clean end");
    }
}

//! The chain follower's driver (I/O edge, alloy): carries the calls the
//! core's state machine ([`gateway_core::chain::follower::Follower`]) asks
//! for to the RPC endpoints, hands it their answers, new heads and the
//! monotonic clock, sleeps until its `poll_timeout`, and sends the
//! [`ChainEvent`]s it emits down a channel. What to ask, what an answer
//! means, reorgs, confirmations, failover and pacing are the core's; this
//! file only moves bytes and time. HTTP endpoints are spoken to directly
//! (reqwest), so a refusal reaches the core with its HTTP status and
//! `Retry-After`; WebSocket endpoints through alloy's pubsub.

use std::time::Duration;

use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::Header;
use alloy::transports::{RpcError as AlloyRpcError, TransportErrorKind};
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use gateway_core::chain::endpoints::Endpoint;
use gateway_core::chain::follower::Follower as Core;
use gateway_core::chain::rpc::{parse_response, RpcCall, RpcFailure, RpcRequest, RpcResult};
use gateway_core::chain::ChainEvent;
use gateway_core::time::MonoTime;

pub use gateway_core::chain::follower::{FollowerConfig, StartState};

pub struct Follower {
    core: Core,
    connections: Vec<Connection>,
    /// New heads from the endpoint the core subscribed on, if any.
    heads: Option<BoxStream<'static, Header>>,
    events: mpsc::Sender<ChainEvent>,
}

impl Follower {
    pub fn new(config: FollowerConfig, start: StartState, events: mpsc::Sender<ChainEvent>) -> anyhow::Result<Self> {
        let connections = config.endpoints.iter().cloned().map(Connection::new).collect();
        let core = Core::new(config, start).map_err(anyhow::Error::msg)?;
        Ok(Follower { core, connections, heads: None, events })
    }

    /// Runs until the receiver is dropped. RPC failures never end it: the
    /// core logs them, reports [`ChainEvent::Unavailable`] and retries with backoff.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let events = self.events.clone();
        loop {
            while let Some(event) = self.core.poll_event() {
                if events.send(event).await.is_err() {
                    return Ok(());
                }
            }
            if let Some(request) = self.core.poll_request(mono_now()) {
                let result = if matches!(request.call, RpcCall::SubscribeHeads) {
                    self.subscribe(request.endpoint).await
                } else {
                    let call = self.connections[request.endpoint].execute(&request);
                    tokio::pin!(call);
                    loop {
                        tokio::select! {
                            result = &mut call => break result,
                            head = next_head(&mut self.heads), if self.heads.is_some() => on_head(&mut self.core, &mut self.heads, head),
                            _ = events.closed() => return Ok(()),
                        }
                    }
                };
                self.core.handle_response(request.id, result, mono_now());
                continue;
            }
            // The step that ended the pass may have emitted events: out with them first.
            if let Some(event) = self.core.poll_event() {
                if events.send(event).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            // No timer means only an input (a head) can move the core on.
            let sleep = match self.core.poll_timeout() {
                Some((at, why)) => {
                    tracing::trace!(why, "chain follower waiting");
                    Some(at.saturating_since(mono_now()))
                }
                None => None,
            };
            tokio::select! {
                () = async { tokio::time::sleep(sleep.unwrap_or_default()).await }, if sleep.is_some() => {}
                head = next_head(&mut self.heads), if self.heads.is_some() => on_head(&mut self.core, &mut self.heads, head),
                _ = events.closed() => return Ok(()),
            }
        }
    }

    /// `eth_subscribe("newHeads")` on a WebSocket endpoint; the stream
    /// replaces any earlier one (the core subscribes on the endpoint it follows).
    async fn subscribe(&mut self, endpoint: usize) -> RpcResult {
        let connection = &mut self.connections[endpoint];
        let timeout = Duration::from_secs(10);
        let subscribed = tokio::time::timeout(timeout, async {
            let provider = connection.connect().await?;
            provider.subscribe_blocks().await.map_err(|err| connection.failure(err))
        })
        .await;
        match subscribed {
            Ok(Ok(subscription)) => {
                self.heads = Some(subscription.into_stream().boxed());
                Ok(gateway_core::chain::rpc::RpcReply::Subscribed)
            }
            Ok(Err(failure)) => Err(failure),
            Err(_) => Err(RpcFailure::Timeout { after: timeout }),
        }
    }
}

async fn next_head(heads: &mut Option<BoxStream<'static, Header>>) -> Option<Header> {
    match heads {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

fn on_head(core: &mut Core, heads: &mut Option<BoxStream<'static, Header>>, head: Option<Header>) {
    match head {
        Some(header) => core.handle_head(header.number, mono_now()),
        None => {
            *heads = None;
            core.handle_heads_closed(mono_now());
        }
    }
}

/// `Retry-After` as delay-seconds (RFC 9110 section 10.2.3); the HTTP-date
/// form, which no RPC provider we know of sends, is left to the core's own backoff.
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The follower's clock: CLOCK_MONOTONIC, the one XDP deny expiries use too.
fn mono_now() -> MonoTime {
    MonoTime::from_nanos(crate::xdp::monotonic_now_ns())
}

/// A refusal's body is kept up to this many bytes: what it says fits in
/// far less, and a misbehaving endpoint must not fill the logs.
const MAX_ERROR_BODY: usize = 4096;

/// One endpoint: an HTTP client, or a WebSocket provider connected on
/// first use and dropped after a transport failure (a broken WebSocket
/// stays broken).
struct Connection {
    endpoint: Endpoint,
    provider: Option<DynProvider>,
    http: Option<reqwest::Client>,
}

impl Connection {
    fn new(endpoint: Endpoint) -> Self {
        Connection { endpoint, provider: None, http: None }
    }

    /// One JSON-RPC call over HTTP: the status and `Retry-After` of a
    /// refusal are kept (alloy's transport drops the headers).
    async fn post(&mut self, call: &RpcCall) -> RpcResult {
        let client = match &self.http {
            Some(client) => client.clone(),
            None => {
                let client = reqwest::Client::builder()
                    .build()
                    .map_err(|err| RpcFailure::Refused { message: format!("HTTP client: {err}") })?;
                self.http = Some(client.clone());
                client
            }
        };
        let body = serde_json::json!({ "jsonrpc": "2.0", "id": 1, "method": call.method(), "params": call.params() });
        let response = client
            .post(&self.endpoint.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|err| self.reqwest_failure(&err))?;
        let status = response.status();
        let retry_after = response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let bytes = response.bytes().await.map_err(|err| self.reqwest_failure(&err))?;
        if status.is_success() {
            return parse_response(call, &bytes);
        }
        let body = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_ERROR_BODY)]);
        Err(RpcFailure::Http { status: status.as_u16(), retry_after, body: self.redact(&body) })
    }

    fn reqwest_failure(&self, err: &reqwest::Error) -> RpcFailure {
        let message = self.redact(&format!("{err}: {}", std::error::Error::source(err).map(ToString::to_string).unwrap_or_default()));
        if err.is_connect() {
            RpcFailure::Refused { message }
        } else {
            RpcFailure::Transport { message }
        }
    }

    async fn connect(&mut self) -> Result<DynProvider, RpcFailure> {
        if let Some(provider) = &self.provider {
            return Ok(provider.clone());
        }
        let connected = if self.endpoint.pubsub {
            // No reconnecting inside alloy: its retries would hold the call
            // until it times out, while the core fails over at once and
            // comes back after backoff.
            let connect = alloy::providers::WsConnect::new(self.endpoint.url.clone()).with_max_retries(0);
            ProviderBuilder::new().connect_ws(connect).await.map(|p| p.erased())
        } else {
            ProviderBuilder::new().connect(&self.endpoint.url).await.map(|p| p.erased())
        };
        match connected {
            Ok(provider) => {
                self.provider = Some(provider.clone());
                Ok(provider)
            }
            Err(err) => Err(RpcFailure::Refused { message: self.redact(&err.to_string()) }),
        }
    }

    /// `request` on this endpoint within its timeout (connecting included).
    async fn execute(&mut self, request: &RpcRequest) -> RpcResult {
        let result = match tokio::time::timeout(request.timeout, self.call(&request.call)).await {
            Ok(result) => result,
            Err(_) => Err(RpcFailure::Timeout { after: request.timeout }),
        };
        if let Err(RpcFailure::Timeout { .. } | RpcFailure::Refused { .. } | RpcFailure::Transport { .. }) = &result {
            self.provider = None;
        }
        result
    }

    async fn call(&mut self, call: &RpcCall) -> RpcResult {
        if !self.endpoint.pubsub {
            return self.post(call).await;
        }
        let provider = self.connect().await?;
        let params = serde_json::value::to_raw_value(&call.params())
            .map_err(|err| RpcFailure::Malformed { message: format!("encoding {}: {err}", call.method()) })?;
        let raw = provider.raw_request_dyn(call.method().into(), &params).await.map_err(|err| self.failure(err))?;
        let value: Value = serde_json::from_str(raw.get())
            .map_err(|err| RpcFailure::Malformed { message: format!("{} answer is not JSON: {err}", call.method()) })?;
        call.parse_result(&value)
    }

    /// What alloy's error says, in the core's terms.
    fn failure(&self, err: AlloyRpcError<TransportErrorKind>) -> RpcFailure {
        match err {
            AlloyRpcError::ErrorResp(payload) => RpcFailure::JsonRpc {
                code: payload.code,
                message: payload.message.to_string(),
                data: payload.data.map(|d| {
                    let text = d.get();
                    serde_json::from_str::<String>(text).unwrap_or_else(|_| text.to_string())
                }),
            },
            AlloyRpcError::Transport(TransportErrorKind::HttpError(http)) => {
                RpcFailure::Http { status: http.status, retry_after: None, body: self.redact(&http.body) }
            }
            AlloyRpcError::NullResp => RpcFailure::Malformed { message: "null response".into() },
            AlloyRpcError::DeserError { err, text } => {
                RpcFailure::Malformed { message: format!("{err}: {}", text.chars().take(200).collect::<String>()) }
            }
            other => RpcFailure::Transport { message: self.redact(&other.to_string()) },
        }
    }

    /// Transport errors quote the URL they failed on; show the label instead.
    fn redact(&self, error: &str) -> String {
        let (url, label) = (&self.endpoint.url, &self.endpoint.label);
        error.replace(url.as_str(), label).replace(url.trim_end_matches('/'), label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
